package repo_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/ct-exporter/ct-exporter/deploy/validate/internal/repo"
)

func TestRootFindsTheExporterModule(t *testing.T) {
	root, err := repo.Root()
	if err != nil {
		t.Fatal(err)
	}
	// This package is deploy/validate/internal/repo of the repository.
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "deploy", "validate", "internal", "repo"); wd != want {
		t.Errorf("Root() = %s; the working directory %s is not its deploy/validate/internal/repo", root, wd)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "ct-exporter")); err != nil {
		t.Errorf("Root() = %s has no cmd/ct-exporter: %v", root, err)
	}
}

func TestRootFromElsewhere(t *testing.T) {
	dir := t.TempDir()
	if _, err := repo.RootFrom(dir); !errors.Is(err, repo.ErrNotFound) {
		t.Errorf("RootFrom(%s) error = %v; want ErrNotFound", dir, err)
	}
	// A go.mod of another module on the way up is skipped.
	sub := filepath.Join(dir, "a", "b")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for path, content := range map[string]string{
		filepath.Join(dir, "go.mod"):      "module " + repo.ModulePath + "\n\ngo 1.26\n",
		filepath.Join(dir, "a", "go.mod"): "module example.com/other\n",
	} {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := repo.RootFrom(sub)
	if err != nil || got != dir {
		t.Errorf("RootFrom(%s) = %q, %v; want %q", sub, got, err, dir)
	}
}
