package grafana_test

import (
	"go.yaml.in/yaml/v3"

	"github.com/ct-exporter/ct-exporter/deploy/validate/alerts"
)

func rulesYAML(f alerts.RuleFile) ([]byte, error) { return yaml.Marshal(f) }
