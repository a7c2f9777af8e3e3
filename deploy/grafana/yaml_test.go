package grafana_test

import (
	"github.com/ct-exporter/ct-exporter/alerts"
	"gopkg.in/yaml.v3"
)

func rulesYAML(f alerts.RuleFile) ([]byte, error) { return yaml.Marshal(f) }
