package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/vhostd/vhostd/internal/daemontest"
	"github.com/vhostd/vhostd/internal/vhostdcni"
)

func TestMain(m *testing.M) {
	code := m.Run()
	daemontest.Cleanup()
	os.Exit(code)
}

// NetworkAttachmentDefinition mirrors the k8s.cni.cncf.io/v1 CRD of the
// Network Plumbing Working Group (its Go module,
// network-attachment-definition-client, is not served by the module proxy
// here): metadata and spec.config, a CNI configuration as a JSON string.
type NetworkAttachmentDefinition struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NetworkAttachmentDefinitionSpec `json:"spec"`
}

// NetworkAttachmentDefinitionSpec is the CRD's spec.
type NetworkAttachmentDefinitionSpec struct {
	Config string `json:"config,omitempty"`
}

// manifests are the decoded objects of every file under kubernetes/.
type manifests struct {
	daemonSets []*appsv1.DaemonSet
	pods       []*corev1.Pod
	nads       []*NetworkAttachmentDefinition
	vms        []map[string]any
	files      map[any]string // object -> file, for messages
}

// splitDocs splits a YAML stream at its "---" lines.
func splitDocs(b []byte) [][]byte {
	var docs [][]byte
	var cur bytes.Buffer
	flush := func() {
		if len(bytes.TrimSpace(stripComments(cur.Bytes()))) > 0 {
			docs = append(docs, append([]byte(nil), cur.Bytes()...))
		}
		cur.Reset()
	}
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if strings.TrimRight(string(line), " \r\n") == "---" {
			flush()
			continue
		}
		cur.Write(line)
	}
	flush()
	return docs
}

func stripComments(b []byte) []byte {
	var out bytes.Buffer
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out.Write(line)
		}
	}
	return out.Bytes()
}

// loadManifests decodes every document of every YAML file under
// kubernetes/ strictly (unknown or duplicate fields are errors) into its
// API type, chosen by apiVersion and kind.
func loadManifests(t *testing.T) *manifests {
	t.Helper()
	var files []string
	for _, pat := range []string{"kubernetes/*.yaml", "kubernetes/*/*.yaml"} {
		m, err := filepath.Glob(pat)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, m...)
	}
	sort.Strings(files)
	if len(files) < 4 {
		t.Fatalf("found only %v under kubernetes/", files)
	}
	ms := &manifests{files: map[any]string{}}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range splitDocs(b) {
			where := fmt.Sprintf("%s document %d", f, i+1)
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &tm); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			strict := func(obj any) {
				if err := yaml.UnmarshalStrict(doc, obj); err != nil {
					t.Fatalf("%s (%s %s): strict decoding: %v", where, tm.APIVersion, tm.Kind, err)
				}
				ms.files[obj] = where
			}
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 DaemonSet":
				o := &appsv1.DaemonSet{}
				strict(o)
				ms.daemonSets = append(ms.daemonSets, o)
			case "v1 Pod":
				o := &corev1.Pod{}
				strict(o)
				ms.pods = append(ms.pods, o)
			case "k8s.cni.cncf.io/v1 NetworkAttachmentDefinition":
				o := &NetworkAttachmentDefinition{}
				strict(o)
				ms.nads = append(ms.nads, o)
			case "kubevirt.io/v1 VirtualMachine":
				// kubevirt.io/api is a large dependency for one example:
				// checked as a generic object in TestKubeVirtExample.
				var o map[string]any
				if err := yaml.UnmarshalStrict(doc, &o); err != nil {
					t.Fatalf("%s: %v", where, err)
				}
				ms.vms = append(ms.vms, o)
			default:
				t.Fatalf("%s: %s %q: no API type to check it against (add one to loadManifests)", where, tm.APIVersion, tm.Kind)
			}
		}
	}
	return ms
}

// TestManifestsStrict decodes every manifest strictly, and checks every
// network attachment's CNI configuration with the plugin's own parser.
func TestManifestsStrict(t *testing.T) {
	ms := loadManifests(t)
	if len(ms.daemonSets) != 1 || len(ms.nads) < 2 || len(ms.pods) < 1 || len(ms.vms) != 1 {
		t.Fatalf("want one DaemonSet, two network attachments, a pod and a VM; got %d, %d, %d, %d",
			len(ms.daemonSets), len(ms.nads), len(ms.pods), len(ms.vms))
	}
	for _, n := range ms.nads {
		conf, err := vhostdcni.ParseConf([]byte(n.Spec.Config))
		if err != nil {
			t.Errorf("%s: network attachment %s: its CNI configuration: %v", ms.files[n], n.Name, err)
			continue
		}
		if conf.Type != "vhostd-cni" || conf.Name != n.Name || conf.CNIVersion == "" {
			t.Errorf("%s: %s: type %q name %q cniVersion %q: want type vhostd-cni, the attachment's name and a cniVersion",
				ms.files[n], n.Name, conf.Type, conf.Name, conf.CNIVersion)
		}
	}
	ds := ms.daemonSets[0]
	sel, err := metav1.LabelSelectorAsMap(ds.Spec.Selector)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range sel {
		if ds.Spec.Template.Labels[k] != v {
			t.Errorf("DaemonSet selector %s=%s does not match the pod template's labels %v", k, v, ds.Spec.Template.Labels)
		}
	}
}

// flagValue returns the value of --name=V or --name V in args.
func flagValue(args []string, name string) (string, bool) {
	for i, a := range args {
		if v, ok := strings.CutPrefix(a, "--"+name+"="); ok {
			return v, true
		}
		if a == "--"+name && i+1 < len(args) {
			return args[i+1], true
		}
	}
	return "", false
}

// hostPathOf returns the host directory behind a container path: the
// hostPath volume mounted at or above it, and the path on the host.
func hostPathOf(spec *corev1.PodSpec, c *corev1.Container, path string) (string, bool) {
	best := ""
	host := ""
	for _, m := range c.VolumeMounts {
		if m.SubPath != "" || m.SubPathExpr != "" {
			continue
		}
		rel, err := filepath.Rel(m.MountPath, path)
		if err != nil || strings.HasPrefix(rel, "..") || len(m.MountPath) <= len(best) {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.HostPath != nil {
				best, host = m.MountPath, filepath.Join(v.HostPath.Path, rel)
			}
		}
	}
	return host, best != ""
}

func findContainer(cs []corev1.Container, name string) *corev1.Container {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}

// TestDaemonSet: the DaemonSet runs vhostd on the host network with
// CAP_NET_ADMIN, resource requests and scrape annotations matching its
// listener; its control socket and the pods' socket directory are in a
// host directory mounted at the same path, and they are the ones the
// network attachment gives the plugin; the init container installs the
// plugin into the host's /opt/cni/bin and creates the ports file vhostd
// reads. The flags are vhostd's own (the binary accepts them), and the
// init container's command works.
func TestDaemonSet(t *testing.T) {
	ms := loadManifests(t)
	ds := ms.daemonSets[0]
	spec := &ds.Spec.Template.Spec
	if !spec.HostNetwork {
		t.Error("the DaemonSet must use the host network (the taps vhostd creates are the host's)")
	}
	c := findContainer(spec.Containers, "vhostd")
	if c == nil {
		t.Fatal("no container named vhostd")
	}
	if len(c.Command) == 0 || filepath.Base(c.Command[0]) != "vhostd" {
		t.Errorf("container command %v: want vhostd", c.Command)
	}
	if c.SecurityContext == nil || c.SecurityContext.Capabilities == nil || !hasCap(c.SecurityContext.Capabilities.Add, "NET_ADMIN") {
		t.Error("vhostd needs CAP_NET_ADMIN (securityContext.capabilities.add)")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("vhostd needs CPU and memory requests: %v", c.Resources.Requests)
	}

	ctl, ok := flagValue(c.Args, "control-socket")
	if !ok {
		t.Fatalf("vhostd args %v: no --control-socket", c.Args)
	}
	hostCtl, ok := hostPathOf(spec, c, ctl)
	if !ok || hostCtl != ctl {
		t.Errorf("control socket %s: want it in a hostPath directory mounted at the same path (the plugin runs on the host); host path %q", ctl, hostCtl)
	}
	cfg, ok := flagValue(c.Args, "config")
	if !ok {
		t.Errorf("vhostd args %v: no --config (ports would not survive a restart of the pod)", c.Args)
	} else if h, ok := hostPathOf(spec, c, cfg); !ok || h != cfg {
		t.Errorf("--config %s: want it in the same host directory", cfg)
	}

	// Every network attachment names this control socket and a socket
	// directory inside a host directory vhostd sees at the same path.
	for _, n := range ms.nads {
		conf, err := vhostdcni.ParseConf([]byte(n.Spec.Config))
		if err != nil {
			t.Fatal(err)
		}
		if conf.ControlSocket != ctl {
			t.Errorf("%s: controlSocket %s, but the DaemonSet's vhostd listens on %s", n.Name, conf.ControlSocket, ctl)
		}
		if h, ok := hostPathOf(spec, c, conf.SocketDir); !ok || h != conf.SocketDir {
			t.Errorf("%s: socketDir %s is not a host directory vhostd sees at the same path", n.Name, conf.SocketDir)
		}
	}

	// Scraping: annotations name the listener's port.
	addr, ok := flagValue(c.Args, "admin-addr")
	if !ok {
		t.Fatalf("no --admin-addr: the read-only listener is on 127.0.0.1 only, Prometheus cannot scrape it")
	}
	_, port, _ := strings.Cut(addr, ":")
	ann := ds.Spec.Template.Annotations
	if ann["prometheus.io/scrape"] != "true" || ann["prometheus.io/port"] != port || ann["prometheus.io/path"] != "/metrics" {
		t.Errorf("scrape annotations %v: want scrape=true, port=%s, path=/metrics", ann, port)
	}
	for _, e := range c.Env {
		if strings.Contains(addr, "$("+e.Name+")") && (e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "status.hostIP") {
			t.Errorf("--admin-addr uses $(%s): want it from status.hostIP", e.Name)
		}
	}

	// The flags are vhostd's: the daemon parses them (and stops at
	// --print-capabilities before opening anything).
	vhostd := daemontest.Build(t, "github.com/vhostd/vhostd/cmd/vhostd")
	args := make([]string, 0, len(c.Args)+1)
	for _, a := range c.Args {
		args = append(args, strings.ReplaceAll(a, "$(NODE_IP)", "127.0.0.1"))
	}
	out, err := exec.Command(vhostd, append(args, "--print-capabilities")...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"type": "net"`) {
		t.Errorf("vhostd %v --print-capabilities: %v\n%s", args, err, out)
	}

	// The init container installs the plugin into the host's CNI bin
	// directory and creates the ports file; run it against temporary
	// directories.
	ic := findContainer(spec.InitContainers, "install-cni")
	if ic == nil {
		t.Fatal("no init container install-cni")
	}
	cmd := append(append([]string(nil), ic.Command...), ic.Args...)
	if len(cmd) < 2 || filepath.Base(cmd[0]) != "vhostd-cni" || cmd[1] != "install" {
		t.Fatalf("install-cni runs %v: want vhostd-cni install", cmd)
	}
	binDir, _ := flagValue(cmd, "cni-bin-dir")
	if h, ok := hostPathOf(spec, ic, binDir); !ok || h != "/opt/cni/bin" {
		t.Errorf("--cni-bin-dir %s is host %q: want the host's /opt/cni/bin", binDir, h)
	}
	pf, _ := flagValue(cmd, "ports-file")
	if pf != cfg {
		t.Errorf("install-cni creates %q, vhostd reads --config %q", pf, cfg)
	}
	plugin := daemontest.Build(t, "github.com/vhostd/vhostd/cmd/vhostd-cni")
	tmp := t.TempDir()
	run := []string{"install"}
	for _, a := range cmd[2:] {
		a = strings.ReplaceAll(a, binDir, filepath.Join(tmp, "bin"))
		a = strings.ReplaceAll(a, pf, filepath.Join(tmp, "ports.conf"))
		run = append(run, a)
	}
	if err := os.Mkdir(filepath.Join(tmp, "bin"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(plugin, run...).CombinedOutput(); err != nil {
		t.Fatalf("vhostd-cni %v: %v\n%s", run, err, out)
	}
	if fi, err := os.Stat(filepath.Join(tmp, "bin", "vhostd-cni")); err != nil || fi.Mode()&0o111 == 0 {
		t.Errorf("installed plugin: %v %v", fi, err)
	}
	if _, err := os.Stat(filepath.Join(tmp, "ports.conf")); err != nil {
		t.Errorf("ports file: %v", err)
	}
	// vhostd starts with that (empty) ports file.
	d := daemontest.Start(t, vhostd, tmp, "--config", filepath.Join(tmp, "ports.conf"))
	d.Stop(t)
}

func hasCap(caps []corev1.Capability, want corev1.Capability) bool {
	for _, c := range caps {
		if c == want {
			return true
		}
	}
	return false
}

// TestDPDKPodExample: the example pod asks for a network attachment that
// exists, mounts only its own socket directory (the attachment's socketDir
// with its UID) and points testpmd at the first interface's socket there.
func TestDPDKPodExample(t *testing.T) {
	ms := loadManifests(t)
	nads := map[string]*vhostdcni.NetConf{}
	for _, n := range ms.nads {
		conf, err := vhostdcni.ParseConf([]byte(n.Spec.Config))
		if err != nil {
			t.Fatal(err)
		}
		nads[n.Name] = conf
	}
	for _, p := range ms.pods {
		netName := p.Annotations["k8s.v1.cni.cncf.io/networks"]
		conf := nads[netName]
		if conf == nil {
			t.Errorf("pod %s: networks annotation %q names no network attachment here", p.Name, netName)
			continue
		}
		found := false
		for _, c := range p.Spec.Containers {
			for _, m := range c.VolumeMounts {
				if m.SubPathExpr != "$(POD_UID)" {
					continue
				}
				for _, v := range p.Spec.Volumes {
					if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == conf.SocketDir {
						found = true
						if !envFrom(c, "POD_UID", "metadata.uid") {
							t.Errorf("pod %s: subPathExpr $(POD_UID) needs env POD_UID from metadata.uid", p.Name)
						}
						sock := filepath.Join(m.MountPath, "net1")
						if !strings.Contains(strings.Join(append(c.Command, c.Args...), " "), "path="+sock) {
							t.Errorf("pod %s: the application does not open %s", p.Name, sock)
						}
					}
				}
			}
		}
		if !found {
			t.Errorf("pod %s: no mount of hostPath %s with subPathExpr $(POD_UID)", p.Name, conf.SocketDir)
		}
	}
}

func envFrom(c corev1.Container, name, field string) bool {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == field {
			return true
		}
	}
	return false
}

// TestKubeVirtExample: the VM's vhost-user interface (binding vhostuser)
// is on a multus network naming a network attachment in client mode (QEMU
// is the socket's server in KubeVirt), and its memory is hugepages.
func TestKubeVirtExample(t *testing.T) {
	ms := loadManifests(t)
	vm := ms.vms[0]
	get := func(m any, path ...string) any {
		for _, k := range path {
			mm, ok := m.(map[string]any)
			if !ok {
				return nil
			}
			m = mm[k]
		}
		return m
	}
	spec := get(vm, "spec", "template", "spec")
	ifaces, _ := get(spec, "domain", "devices", "interfaces").([]any)
	nets, _ := get(spec, "networks").([]any)
	if get(spec, "domain", "memory", "hugepages", "pageSize") == nil {
		t.Error("the VM needs hugepages (shared guest memory for vhost-user)")
	}
	n := 0
	for _, i := range ifaces {
		if get(i, "binding", "name") != "vhostuser" {
			continue
		}
		n++
		name := get(i, "name")
		for _, nw := range nets {
			if get(nw, "name") != name {
				continue
			}
			nad, _ := get(nw, "multus", "networkName").(string)
			ok := false
			for _, a := range ms.nads {
				if a.Name != nad {
					continue
				}
				conf, err := vhostdcni.ParseConf([]byte(a.Spec.Config))
				if err != nil {
					t.Fatal(err)
				}
				ok = conf.Mode == vhostdcni.ModeClient
			}
			if !ok {
				t.Errorf("interface %v: network %q must be a vhostd-cni attachment in mode client", name, nad)
			}
		}
	}
	if n != 1 {
		b, _ := json.Marshal(ifaces)
		t.Errorf("want one vhostuser interface, got %d: %s", n, b)
	}
}
