package grafana

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/ct-exporter/ct-exporter/deploy/validate/internal/repo"
)

// DashboardFileName is the name of the dashboard file in the repository's
// deploy/grafana/ directory.
const DashboardFileName = "ct-exporter.json"

// DashboardPath is where the dashboard lives, relative to the repository
// root.
const DashboardPath = "deploy/grafana/" + DashboardFileName

// DashboardFile returns the absolute path of the repository's dashboard,
// DashboardPath.
func DashboardFile() (string, error) {
	return repo.Path(DashboardPath)
}

// DashboardJSON returns the content of the repository's dashboard,
// DashboardPath.
func DashboardJSON() ([]byte, error) {
	b, err := repo.ReadFile(DashboardPath)
	if err != nil {
		return nil, fmt.Errorf("read dashboard: %w", err)
	}
	return b, nil
}

// Dashboard is the subset of Grafana's dashboard JSON model the dashboard
// uses. Parse rejects any field not modelled here.
type Dashboard struct {
	UID           string     `json:"uid"`
	Title         string     `json:"title"`
	Description   string     `json:"description"`
	Tags          []string   `json:"tags"`
	Timezone      string     `json:"timezone"`
	Editable      bool       `json:"editable"`
	GraphTooltip  int        `json:"graphTooltip"`
	SchemaVersion int        `json:"schemaVersion"`
	Version       int        `json:"version"`
	Refresh       string     `json:"refresh"`
	Time          TimeRange  `json:"time"`
	Templating    Templating `json:"templating"`
	Panels        []Panel    `json:"panels"`
}

// TimeRange is the dashboard's default time range.
type TimeRange struct {
	From string `json:"from"`
	To   string `json:"to"`
}

// Templating holds the dashboard variables.
type Templating struct {
	List []Variable `json:"list"`
}

// Variable is a dashboard variable of type datasource or query.
type Variable struct {
	Name       string         `json:"name"`
	Label      string         `json:"label"`
	Type       string         `json:"type"`
	Query      string         `json:"query"`
	Definition string         `json:"definition,omitempty"`
	Datasource *DatasourceRef `json:"datasource,omitempty"`
	Refresh    int            `json:"refresh"`
	Multi      bool           `json:"multi"`
	IncludeAll bool           `json:"includeAll"`
	AllValue   string         `json:"allValue,omitempty"`
	Sort       int            `json:"sort"`
	Regex      string         `json:"regex"`
	Hide       int            `json:"hide"`
	Current    Current        `json:"current"`
}

// Current is a variable's selected value.
type Current struct {
	Text  any `json:"text,omitempty"`
	Value any `json:"value,omitempty"`
}

// DatasourceRef points at a data source, here always "${datasource}".
type DatasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

// GridPos places a panel on the 24-column grid.
type GridPos struct {
	H int `json:"h"`
	W int `json:"w"`
	X int `json:"x"`
	Y int `json:"y"`
}

// Panel is a dashboard panel, or a row (Type "row", no targets).
type Panel struct {
	ID          int             `json:"id"`
	Type        string          `json:"type"`
	Title       string          `json:"title"`
	Description string          `json:"description,omitempty"`
	GridPos     GridPos         `json:"gridPos"`
	Datasource  *DatasourceRef  `json:"datasource,omitempty"`
	Targets     []Target        `json:"targets,omitempty"`
	FieldConfig *FieldConfig    `json:"fieldConfig,omitempty"`
	Options     json.RawMessage `json:"options,omitempty"`
	Collapsed   bool            `json:"collapsed,omitempty"`
	Panels      []Panel         `json:"panels,omitempty"`
}

// Target is one PromQL query of a panel.
type Target struct {
	RefID        string         `json:"refId"`
	Datasource   *DatasourceRef `json:"datasource,omitempty"`
	Expr         string         `json:"expr"`
	LegendFormat string         `json:"legendFormat,omitempty"`
	Format       string         `json:"format,omitempty"`
	Instant      bool           `json:"instant,omitempty"`
	Range        bool           `json:"range,omitempty"`
}

// FieldConfig holds a panel's field defaults and overrides.
type FieldConfig struct {
	Defaults  FieldDefaults     `json:"defaults"`
	Overrides []json.RawMessage `json:"overrides"`
}

// FieldDefaults are the field settings the dashboard uses.
type FieldDefaults struct {
	Unit       string          `json:"unit,omitempty"`
	Min        *float64        `json:"min,omitempty"`
	Max        *float64        `json:"max,omitempty"`
	Decimals   *int            `json:"decimals,omitempty"`
	Color      json.RawMessage `json:"color,omitempty"`
	Custom     json.RawMessage `json:"custom,omitempty"`
	Mappings   json.RawMessage `json:"mappings,omitempty"`
	Thresholds *Thresholds     `json:"thresholds,omitempty"`
}

// Thresholds colour a panel's values.
type Thresholds struct {
	Mode  string          `json:"mode"`
	Steps []ThresholdStep `json:"steps"`
}

// ThresholdStep is one threshold; the first has a null Value.
type ThresholdStep struct {
	Color string   `json:"color"`
	Value *float64 `json:"value"`
}

// ErrInvalidDashboard is returned (wrapped) by Parse.
var ErrInvalidDashboard = errors.New("invalid dashboard")

// Parse decodes a dashboard strictly: unknown fields and trailing data are
// errors wrapping ErrInvalidDashboard.
func Parse(data []byte) (*Dashboard, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var d Dashboard
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidDashboard, err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: trailing data after the dashboard", ErrInvalidDashboard)
	}
	return &d, nil
}

// Load reads and parses the dashboard file at path.
func Load(path string) (*Dashboard, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	d, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// AllPanels returns every panel of d, rows and the panels inside collapsed
// rows included, in document order.
func (d *Dashboard) AllPanels() []Panel {
	var out []Panel
	var walk func([]Panel)
	walk = func(ps []Panel) {
		for _, p := range ps {
			out = append(out, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// Variable returns the dashboard variable called name, or nil.
func (d *Dashboard) Variable(name string) *Variable {
	for i := range d.Templating.List {
		if d.Templating.List[i].Name == name {
			return &d.Templating.List[i]
		}
	}
	return nil
}

// PanelQuery is one query of one panel, as a test runs it.
type PanelQuery struct {
	PanelID    int
	PanelTitle string
	PanelType  string
	RefID      string
	// Expr is the PromQL as written, with Grafana variables such as
	// $instance, $netns and $__rate_interval; see Expand.
	Expr         string
	LegendFormat string
	// Instant is true for instant queries (tables, bar gauges); range
	// queries otherwise.
	Instant bool
	// Format is "time_series" (default), "table" or "heatmap".
	Format string
}

// Queries returns every query of every panel of d, in document order.
func (d *Dashboard) Queries() []PanelQuery {
	var out []PanelQuery
	for _, p := range d.AllPanels() {
		for _, t := range p.Targets {
			f := t.Format
			if f == "" {
				f = "time_series"
			}
			out = append(out, PanelQuery{
				PanelID:      p.ID,
				PanelTitle:   p.Title,
				PanelType:    p.Type,
				RefID:        t.RefID,
				Expr:         t.Expr,
				LegendFormat: t.LegendFormat,
				Instant:      t.Instant && !t.Range,
				Format:       f,
			})
		}
	}
	return out
}

// PanelQueries loads the dashboard at path and returns every panel query.
func PanelQueries(path string) ([]PanelQuery, error) {
	d, err := Load(path)
	if err != nil {
		return nil, err
	}
	return d.Queries(), nil
}
