package lab

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ModulePath is the import path of the exporter's Go module.
const ModulePath = "github.com/ct-exporter/ct-exporter"

// ErrNoModule reports that no directory above the one searched holds the
// exporter's go.mod.
var ErrNoModule = errors.New("no go.mod of " + ModulePath + " found")

// ModuleRoot returns the directory of the exporter's go.mod at or above
// dir. It skips the go.mod files of other modules on the way up, so that
// a module nested in the repository (for example deploy/validate) finds
// the exporter's root too.
func ModuleRoot(dir string) (string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("module root: %w", err)
	}
	for d := dir; ; d = filepath.Dir(d) {
		if path, err := modulePath(filepath.Join(d, "go.mod")); err == nil && path == ModulePath {
			return d, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%w above %s", ErrNoModule, dir)
		}
	}
}

// modulePath returns the module path a go.mod file declares.
func modulePath(gomod string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "module "); ok {
			return strings.Trim(strings.TrimSpace(rest), `"`), nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s declares no module", gomod)
}

// BuildExporter builds ./cmd/ct-exporter of the exporter's module, found
// at or above the working directory, into outDir and returns the
// binary's path. The binary is executable by every user, so that tests
// can run it unprivileged. Callers that need it several times build it
// once and keep the path.
func BuildExporter(ctx context.Context, outDir string) (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("build ct-exporter: %w", err)
	}
	root, err := ModuleRoot(wd)
	if err != nil {
		return "", fmt.Errorf("build ct-exporter: %w", err)
	}
	out, err := filepath.Abs(filepath.Join(outDir, "ct-exporter"))
	if err != nil {
		return "", fmt.Errorf("build ct-exporter: %w", err)
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/ct-exporter")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/ct-exporter in %s: %w: %s", root, err, strings.TrimSpace(string(b)))
	}
	if err := os.Chmod(out, 0o755); err != nil {
		return "", fmt.Errorf("build ct-exporter: %w", err)
	}
	return out, nil
}
