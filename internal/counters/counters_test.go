package counters

import "testing"

func TestRegistrySlotsAndNames(t *testing.T) {
	var r Registry
	a := r.Add(Desc{Name: "a", Metric: "a_total", Help: "A."})
	f := r.Add(Desc{Name: "f", Metric: "f_total", Help: "F.", Label: "errno", Values: []string{"other", "EINVAL"}, Stat: "f_error_%s"})
	b := r.Add(Desc{Name: "b", Omit: All})
	if a != 0 || f != 1 || b != 3 || r.Slots() != 4 || r.Len() != 3 {
		t.Fatalf("ids a=%d f=%d b=%d slots=%d", a, f, b, r.Slots())
	}
	d, _ := r.Desc(1)
	if got := d.StatName(1); got != "f_error_einval" {
		t.Errorf("stat name %q", got)
	}
	if got := d.LogKey(0); got != "f_other" {
		t.Errorf("log key %q", got)
	}
	v := r.NewValues()
	v.Add(f.At(1), 5)
	v.Add(a, 2)
	if s := v.Snapshot(nil); s[0] != 2 || s[2] != 5 || v.Sum(f, 2) != 5 {
		t.Errorf("snapshot %v", s)
	}
	if n := testing.AllocsPerRun(100, func() { v.Add(f.At(1), 1) }); n != 0 {
		t.Errorf("Add allocates %v", n)
	}
}

func TestRegistryRefusesBadDeclarations(t *testing.T) {
	for name, d := range map[string]Desc{
		"duplicate":      {Name: "a", Omit: All},
		"no metric":      {Name: "x", Help: "X."},
		"empty family":   {Name: "y", Label: "l", Omit: All},
		"no name at all": {Omit: All},
	} {
		t.Run(name, func(t *testing.T) {
			var r Registry
			r.Add(Desc{Name: "a", Omit: All})
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			r.Add(d)
		})
	}
}
