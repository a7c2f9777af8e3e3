package alerts

import (
	"bytes"
	"errors"
	"fmt"
	"io"

	"go.yaml.in/yaml/v3"

	"github.com/ct-exporter/ct-exporter/deploy/validate/internal/repo"
)

// RulesFileName is the name of the rule file in the repository's alerts/
// directory.
const RulesFileName = "ct-exporter.rules.yml"

// RulesPath is where the rule file lives, relative to the repository root.
const RulesPath = "alerts/" + RulesFileName

// KubernetesRulesFileName is the name of the Kubernetes and fleet
// recording rule file in the repository's alerts/ directory.
const KubernetesRulesFileName = "kubernetes.rules.yml"

// KubernetesRulesPath is where the Kubernetes and fleet recording rules
// live, relative to the repository root.
const KubernetesRulesPath = "alerts/" + KubernetesRulesFileName

// Rules returns the content of the repository's rule file, RulesPath.
func Rules() ([]byte, error) {
	return readRules(RulesPath)
}

// KubernetesRules returns the content of the repository's Kubernetes and
// fleet rule file, KubernetesRulesPath.
func KubernetesRules() ([]byte, error) {
	return readRules(KubernetesRulesPath)
}

func readRules(path string) ([]byte, error) {
	b, err := repo.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read rules: %w", err)
	}
	return b, nil
}

// RuleFile is a Prometheus rule file: the subset of its format these rules
// use. Parse rejects any field not modelled here.
type RuleFile struct {
	Groups []RuleGroup `yaml:"groups"`
}

// RuleGroup is one group of a rule file.
type RuleGroup struct {
	Name     string `yaml:"name"`
	Interval string `yaml:"interval,omitempty"`
	Rules    []Rule `yaml:"rules"`
}

// Rule is a recording rule (Record set) or an alerting rule (Alert set).
type Rule struct {
	Record      string            `yaml:"record,omitempty"`
	Alert       string            `yaml:"alert,omitempty"`
	Expr        string            `yaml:"expr"`
	For         string            `yaml:"for,omitempty"`
	Labels      map[string]string `yaml:"labels,omitempty"`
	Annotations map[string]string `yaml:"annotations,omitempty"`
}

// ErrInvalidRules is returned (wrapped) by Parse when a rule file does not
// have the expected shape.
var ErrInvalidRules = errors.New("invalid rule file")

// Parse decodes a rule file strictly: unknown fields, a rule that is both or
// neither recording and alerting, an empty expr, or trailing documents are
// errors wrapping ErrInvalidRules.
func Parse(rulesYAML []byte) (*RuleFile, error) {
	dec := yaml.NewDecoder(bytes.NewReader(rulesYAML))
	dec.KnownFields(true)
	var f RuleFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidRules, err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: more than one YAML document", ErrInvalidRules)
	}
	if len(f.Groups) == 0 {
		return nil, fmt.Errorf("%w: no groups", ErrInvalidRules)
	}
	for _, g := range f.Groups {
		if g.Name == "" {
			return nil, fmt.Errorf("%w: group without a name", ErrInvalidRules)
		}
		for i, r := range g.Rules {
			switch {
			case (r.Record == "") == (r.Alert == ""):
				return nil, fmt.Errorf("%w: group %q rule %d: exactly one of record and alert must be set", ErrInvalidRules, g.Name, i)
			case r.Expr == "":
				return nil, fmt.Errorf("%w: group %q rule %d: empty expr", ErrInvalidRules, g.Name, i)
			case r.Record != "" && (r.For != "" || r.Annotations != nil):
				return nil, fmt.Errorf("%w: recording rule %q has for or annotations", ErrInvalidRules, r.Record)
			}
		}
	}
	return &f, nil
}

// AlertingRules returns the alerting rules of f, in file order.
func (f *RuleFile) AlertingRules() []Rule {
	var out []Rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Alert != "" {
				out = append(out, r)
			}
		}
	}
	return out
}

// RecordingRules returns the recording rules of f, in file order.
func (f *RuleFile) RecordingRules() []Rule {
	var out []Rule
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			if r.Record != "" {
				out = append(out, r)
			}
		}
	}
	return out
}
