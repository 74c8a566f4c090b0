package portspec

import "testing"

// FuzzParse: the parser never panics, and what it accepts is valid and
// round-trips through its canonical form.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"name=vm0,socket=/run/vm0.sock,tap=vtap0", "name=a,socket=/s,client=false,null", "name=m,socket=/s,macvtap=m,lower=eth0,mode=vepa,mac=52:54:00:00:00:01,queues=4",
		"name=a,socket=/s,tap=x,null", ",,", "name=a,socket=/s,client=maybe", "=", "name==,socket==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := Parse(in)
		if err != nil {
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("Parse(%q) accepted an invalid spec: %v", in, err)
		}
		back, err := Parse(s.String())
		if err != nil || !back.Equal(s) {
			t.Fatalf("Parse(%q).String() = %q does not round-trip: %+v, %v", in, s.String(), back, err)
		}
	})
}
