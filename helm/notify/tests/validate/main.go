// Command validate decodes every object of rendered Helm manifests strictly into its API type
// and fails on the first unknown field, wrong type or unknown kind of each object:
//
//   - built-in kinds into their k8s.io/api structs (sigs.k8s.io/yaml strict decoding);
//   - ServiceMonitor and PrometheusRule into the prometheus-operator structs;
//   - CRD kinds whose published CustomResourceDefinition is given with -crd (KEDA's) against
//     its OpenAPI schema the way the API server does: unknown fields (structural pruning), then
//     the schema's types, enums, patterns and required fields;
//   - Strimzi KafkaTopic and KafkaUser into our own structs of their documented fields
//     (no Go module carrying Strimzi's types or CRDs is served here; see strimzi.go).
//
// Then it checks what ties objects together: names and labels valid for Kubernetes (63
// characters), and every Service, PDB, HPA and ScaledObject pointing at a rendered workload.
//
// With -extract DIR it also writes what tests run against the rendered chart: for every
// container of a Deployment or Job, <kind>-<name>-<container>.args (one argument a line) and
// .env (NAME=value; a value from a Secret as NAME=@secret:<name>/<key>), every ConfigMap key
// as configmap-<name>/<key>, and every PrometheusRule's groups as prometheusrule-<name>.yaml.
//
// Usage: validate [-crd crd.yaml]... [-extract dir] manifests.yaml...
package main

import (
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
)

type crdFiles []string

func (c *crdFiles) String() string     { return strings.Join(*c, ",") }
func (c *crdFiles) Set(v string) error { *c = append(*c, v); return nil }

func main() {
	var crds crdFiles
	extract := flag.String("extract", "", "also write each container's args and env, ConfigMap data and PrometheusRule groups into this directory")
	flag.Var(&crds, "crd", "CustomResourceDefinition file whose kinds are validated against its schema (repeatable)")
	flag.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: validate [-crd file]... manifest.yaml...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	v, err := newValidator(crds)
	if err != nil {
		fmt.Fprintf(os.Stderr, "validate: %v\n", err)
		os.Exit(2)
	}
	failed := false
	for _, file := range flag.Args() {
		data, err := os.ReadFile(file)
		if err != nil {
			fmt.Fprintf(os.Stderr, "validate: %v\n", err)
			os.Exit(2)
		}
		report := v.validateStream(data)
		for _, e := range report.errors {
			fmt.Fprintf(os.Stderr, "%s: %s\n", file, e)
		}
		if len(report.errors) > 0 {
			failed = true
		}
		if *extract != "" {
			if err := extractTo(*extract, report.decoded); err != nil {
				fmt.Fprintf(os.Stderr, "validate: extract: %v\n", err)
				os.Exit(2)
			}
		}
		fmt.Printf("%s: %d objects valid (%s)\n", file, report.objects-len(report.errors), summary(report.kinds))
	}
	if failed {
		os.Exit(1)
	}
}

func summary(kinds map[string]int) string {
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%d %s", kinds[k], k))
	}
	return strings.Join(parts, ", ")
}
