package lab

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestModuleRootSkipsNestedModules(t *testing.T) {
	root := t.TempDir()
	nested := filepath.Join(root, "deploy", "validate")
	if err := os.MkdirAll(nested, 0o755); err != nil {
		t.Fatal(err)
	}
	write := func(path, text string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(nested, "go.mod"), "module "+ModulePath+"/deploy/validate\n\ngo 1.26\n")
	if _, err := ModuleRoot(nested); !errors.Is(err, ErrNoModule) {
		t.Fatalf("ModuleRoot without the exporter's go.mod: %v, want ErrNoModule", err)
	}
	write(filepath.Join(root, "go.mod"), "// the exporter\nmodule "+ModulePath+"\n\ngo 1.26\n")
	got, err := ModuleRoot(nested)
	if err != nil || got != root {
		t.Fatalf("ModuleRoot(%s) = %q, %v; want %q", nested, got, err, root)
	}
}

func TestBuildExporter(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go tool")
	}
	bin, err := BuildExporter(context.Background(), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(bin)
	if err != nil || fi.Mode().Perm()&0o111 != 0o111 {
		t.Fatalf("binary %s: %v, mode %v", bin, err, fi.Mode())
	}
	out, _ := exec.Command(bin, "--help").CombinedOutput()
	if !strings.Contains(string(out), "--web.listen-address") {
		t.Fatalf("%s --help:\n%s", bin, out)
	}
}
