// Package repo finds the ct-exporter repository that the validation module
// lives in, so that its tests and generators read the deployment files
// where they are kept (alerts/, deploy/, Dockerfile). The exporter binary
// is built with lab.BuildExporter.
package repo

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/ct-exporter/ct-exporter/internal/lab"
)

// ModulePath is the module path of the exporter's go.mod.
const ModulePath = lab.ModulePath

// ErrNotFound is returned (wrapped) by Root when no directory above the
// starting one holds the exporter's go.mod.
var ErrNotFound = lab.ErrNoModule

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
	root, err := lab.ModuleRoot(dir)
	if err != nil {
		return "", fmt.Errorf("find repository: %w", err)
	}
	return root, nil
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
