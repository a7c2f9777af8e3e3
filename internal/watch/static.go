package watch

import (
	"errors"
	"fmt"

	"github.com/ct-exporter/ct-exporter/internal/netns"
)

// Values of NamespaceInfo.Source, besides the discovery sources "dir" and
// "proc".
const (
	// SourceSelf is the exporter's own namespace.
	SourceSelf = "self"
	// SourcePath is a namespace named by a static path.
	SourcePath = "path"
)

// ErrSameNamespace reports two static paths that name one namespace.
var ErrSameNamespace = errors.New("same network namespace")

// ErrSelfName reports a static path whose name is the one the exporter's
// own namespace is watched under.
var ErrSelfName = errors.New("name is the exporter's own namespace")

// SelfNameError is a static path named like the exporter's own namespace
// while that one is watched too. It wraps ErrSelfName.
type SelfNameError struct {
	// Path is the static path; Name is the name it was given.
	Path, Name string
}

// Error implements error.
func (e *SelfNameError) Error() string {
	return fmt.Sprintf("%s: name %q is the exporter's own namespace", e.Path, e.Name)
}

// Unwrap returns ErrSelfName.
func (e *SelfNameError) Unwrap() error { return ErrSelfName }

// SameNamespaceError is a static path that names the same namespace as an
// earlier one. It wraps ErrSameNamespace.
type SameNamespaceError struct {
	// Path names the same namespace as Earlier.
	Path, Earlier string
}

// Error implements error.
func (e *SameNamespaceError) Error() string {
	return fmt.Sprintf("%s: %v as %s", e.Path, ErrSameNamespace, e.Earlier)
}

// Unwrap returns ErrSameNamespace.
func (e *SameNamespaceError) Unwrap() error { return ErrSameNamespace }

// StaticTargets returns the namespaces watched for the whole run: the
// exporter's own when self is true, then the namespaces at paths. A path
// named like the exporter's own namespace is a *SelfNameError then.
func StaticTargets(paths []string, self bool) ([]netns.Target, error) {
	var targets []netns.Target
	if self {
		targets = append(targets, netns.Self())
	}
	if len(paths) == 0 {
		return targets, nil
	}
	fromPaths, err := netns.TargetsFromPaths(paths)
	if err != nil {
		return nil, err
	}
	for _, t := range fromPaths {
		if self && t.Name == netns.SelfName {
			return nil, &SelfNameError{Path: t.Path, Name: t.Name}
		}
	}
	return append(targets, fromPaths...), nil
}
