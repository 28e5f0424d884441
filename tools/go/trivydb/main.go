// Command trivydb writes a small Trivy vulnerability database for k8see's offline scan tests.
//
//	trivydb -advisories advisories.json -output DIR
//
// It writes DIR/db/trivy.db and DIR/db/metadata.json, the layout of a Trivy cache folder, so
// `trivy image --cache-dir DIR --skip-db-update --offline-scan` scans with it and reaches no
// network. The advisories go through trivy-db's own Alpine source (written as Alpine secdb
// files and read back by its parser) and its own build and optimize steps, so the database is
// laid out exactly as the published one, only with a few made-up entries. The advisories file:
//
//	{"release": "3.22", "advisories": [
//	  {"id": "CVE-2099-0001", "package": "k8see-vulnerable", "fixed": "1.0.1-r0",
//	   "severity": "CRITICAL", "title": "A made-up flaw"}]}
//
// Each advisory says: the package of that name, below version "fixed", in Alpine "release",
// has the vulnerability "id" (CVE-… or GHSA-…, as in Alpine's secdb) of that severity.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/aquasecurity/trivy-db/pkg/db"
	"github.com/aquasecurity/trivy-db/pkg/types"
	"github.com/aquasecurity/trivy-db/pkg/vulndb"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/alpine"
	"github.com/aquasecurity/trivy-db/pkg/vulnsrc/vulnerability"
)

type advisory struct {
	ID       string `json:"id"`
	Package  string `json:"package"`
	Fixed    string `json:"fixed"`
	Severity string `json:"severity"`
	Title    string `json:"title"`
}

type input struct {
	Release    string     `json:"release"`
	Advisories []advisory `json:"advisories"`
}

var (
	idPattern      = regexp.MustCompile(`^(CVE-\d{4}-\d{4,}|GHSA(-[23456789cfghjmpqrvwx]{4}){3})$`)
	namePattern    = regexp.MustCompile(`^[a-z0-9][a-z0-9._+-]{0,99}$`)
	releasePattern = regexp.MustCompile(`^\d+\.\d+$`)
)

func main() {
	advisories := flag.String("advisories", "", "JSON file of advisories (see the package doc)")
	output := flag.String("output", "", "Trivy cache folder to write db/trivy.db and db/metadata.json in")
	flag.Parse()
	if *advisories == "" || *output == "" || flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "usage: trivydb -advisories FILE -output DIR")
		os.Exit(2)
	}
	if err := run(*advisories, *output); err != nil {
		fmt.Fprintf(os.Stderr, "trivydb: %v\n", err)
		os.Exit(1)
	}
}

func run(advisoriesFile, output string) error {
	in, err := load(advisoriesFile)
	if err != nil {
		return err
	}
	secdb, err := os.MkdirTemp("", "trivydb-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(secdb)
	if err := writeSecdb(secdb, in); err != nil {
		return err
	}

	dbDir := filepath.Join(output, "db")
	for _, name := range []string{"trivy.db", "metadata.json"} {
		if err := os.Remove(filepath.Join(dbDir, name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if err := db.Init(dbDir); err != nil {
		return fmt.Errorf("opening %s: %w", db.Path(dbDir), err)
	}
	sources := map[types.SourceID]vulnsrc.VulnSrc{
		vulnerability.Alpine: alpine.NewVulnSrc(),
		severitySource:       severities{in.Advisories},
	}
	build := vulndb.New(secdb, dbDir, 24*time.Hour, vulndb.WithVulnSrcs(sources))
	if err := build.Build([]string{string(vulnerability.Alpine), string(severitySource)}); err != nil {
		db.Close()
		return fmt.Errorf("building the database: %w", err)
	}
	if err := db.Close(); err != nil {
		return err
	}
	fmt.Printf("trivydb: wrote %d advisories for Alpine %s to %s\n", len(in.Advisories), in.Release, db.Path(dbDir))
	return nil
}

func load(path string) (input, error) {
	var in input
	data, err := os.ReadFile(path)
	if err != nil {
		return in, err
	}
	decoder := json.NewDecoder(strings.NewReader(string(data)))
	decoder.DisallowUnknownFields()
	if err := decoder.Decode(&in); err != nil {
		return in, fmt.Errorf("%s is not a valid advisories file: %w", path, err)
	}
	if !releasePattern.MatchString(in.Release) {
		return in, fmt.Errorf("release %q is not an Alpine release such as 3.22", in.Release)
	}
	if len(in.Advisories) == 0 {
		return in, fmt.Errorf("%s has no advisories", path)
	}
	for i, adv := range in.Advisories {
		switch {
		case !idPattern.MatchString(adv.ID):
			return in, fmt.Errorf("advisory %d: id %q is neither CVE-YYYY-NNNN nor a GHSA id", i, adv.ID)
		case !namePattern.MatchString(adv.Package):
			return in, fmt.Errorf("advisory %d: package %q is not an Alpine package name", i, adv.Package)
		case adv.Fixed == "":
			return in, fmt.Errorf("advisory %d: fixed (the first version without the flaw) is empty", i)
		}
		if _, err := types.NewSeverity(adv.Severity); err != nil || adv.Severity == "UNKNOWN" {
			return in, fmt.Errorf("advisory %d: severity %q is not LOW, MEDIUM, HIGH or CRITICAL", i, adv.Severity)
		}
	}
	return in, nil
}

// writeSecdb writes the advisories as Alpine secdb files, vuln-list/alpine/<release>/main/<pkg>.json,
// the input trivy-db's Alpine source reads.
func writeSecdb(root string, in input) error {
	byPackage := map[string]map[string][]string{}
	for _, adv := range in.Advisories {
		if byPackage[adv.Package] == nil {
			byPackage[adv.Package] = map[string][]string{}
		}
		byPackage[adv.Package][adv.Fixed] = append(byPackage[adv.Package][adv.Fixed], adv.ID)
	}
	dir := filepath.Join(root, "vuln-list", "alpine", in.Release, "main")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	names := make([]string, 0, len(byPackage))
	for name := range byPackage {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		data, err := json.Marshal(map[string]any{
			"name":          name,
			"distroversion": "v" + in.Release,
			"reponame":      "main",
			"archs":         []string{"x86_64", "aarch64"},
			"secfixes":      byPackage[name],
		})
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, name+".json"), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// severitySource states each advisory's title and severity, as the Alpine source of the
// published database gets them from NVD and vendors; Trivy reads them as Alpine's own.
const severitySource types.SourceID = "k8see-synthetic"

type severities struct{ advisories []advisory }

func (s severities) Name() types.SourceID { return severitySource }

func (s severities) Update(string) error {
	return db.Config{}.BatchUpdate(func(tx *bolt.Tx) error {
		for _, adv := range s.advisories {
			severity, _ := types.NewSeverity(adv.Severity)
			detail := types.VulnerabilityDetail{
				ID:          adv.ID,
				Severity:    severity,
				Title:       adv.Title,
				Description: "A synthetic advisory of k8see's test database; it describes no real flaw.",
			}
			if err := (db.Config{}).PutVulnerabilityDetail(tx, adv.ID, vulnerability.Alpine, detail); err != nil {
				return err
			}
		}
		return nil
	})
}
