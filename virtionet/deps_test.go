package virtionet_test

import (
	"go/build"
	"path/filepath"
	"strings"
	"testing"
)

const module = "github.com/vhostd/vhostd"

// TestNoTransportImport: the device must not depend on vhost-user, so that
// another transport (VDUSE) can drive it through vdev. It walks the
// module-local imports of the non-test files (what `go list -deps` would
// list) and fails on any vhostuser package.
func TestNoTransportImport(t *testing.T) {
	for _, root := range []string{module + "/virtionet", module + "/virtionet/portlink", module + "/vdev"} {
		seen := map[string]bool{}
		var walk func(path string, chain []string)
		walk = func(path string, chain []string) {
			if seen[path] {
				return
			}
			seen[path] = true
			chain = append(chain, path)
			if path == module+"/vhostuser" || strings.HasPrefix(path, module+"/vhostuser/") {
				t.Errorf("%s depends on the vhost-user transport: %s", root, strings.Join(chain, " -> "))
				return
			}
			dir := filepath.Join("..", strings.TrimPrefix(strings.TrimPrefix(path, module), "/"))
			pkg, err := build.ImportDir(dir, 0)
			if err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			for _, imp := range pkg.Imports {
				if imp == module || strings.HasPrefix(imp, module+"/") {
					walk(imp, chain)
				}
			}
		}
		walk(root, nil)
		if len(seen) < 2 && root != module+"/vdev" {
			t.Errorf("%s: walked only %v; the walk is broken", root, seen)
		}
	}
}
