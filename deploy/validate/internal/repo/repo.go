// Package repo finds the ct-exporter repository that the validation module
// lives in, so that its tests and generators read the deployment files
// where they are kept (alerts/, deploy/, Dockerfile), and builds the
// exporter binary from it.
package repo

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModulePath is the module path of the exporter's go.mod.
const ModulePath = "github.com/ct-exporter/ct-exporter"

// ErrNotFound is returned (wrapped) by Root when no directory above the
// starting one holds the exporter's go.mod.
var ErrNotFound = errors.New("ct-exporter repository not found")

// Root returns the absolute path of the repository: the nearest directory
// at or above the working directory whose go.mod declares ModulePath.
func Root() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository: %w", err)
	}
	return RootFrom(wd)
}

// RootFrom is Root starting at dir instead of the working directory.
func RootFrom(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("find repository: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if modulePath(filepath.Join(d, "go.mod")) == ModulePath {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%w above %s", ErrNotFound, dir)
		}
	}
}

// Path returns the absolute path of rel, a slash-separated path relative
// to the repository root.
func Path(rel string) (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, filepath.FromSlash(rel)), nil
}

// ReadFile reads rel, a slash-separated path relative to the repository
// root.
func ReadFile(rel string) ([]byte, error) {
	p, err := Path(rel)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// modulePath returns the module path declared by the go.mod at path, or ""
// when there is none.
func modulePath(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`)
		}
	}
	return ""
}

// BuildExporter builds ./cmd/ct-exporter of the repository at root into
// the file out with the go command found in PATH, and returns the go
// command's output with the error when the build fails. It is the one
// place this module builds the exporter; every test that runs the binary
// gets it from here.
func BuildExporter(root, out string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("build ct-exporter: %w", err)
	}
	cmd := exec.Command(goTool, "build", "-o", out, "./cmd/ct-exporter")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/ct-exporter: %w\n%s", err, b)
	}
	return nil
}
