package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: d, labels: {app: x}}
spec:
  replicas: 2
  selector: {matchLabels: {app: x}}
  template:
    metadata: {labels: {app: x}}
    spec:
      containers: [{name: c, image: i}]
`

// kedaValidator loads the KEDA CRDs dev/helm-check.sh points NOTIFY_KEDA_CRDS at.
func kedaValidator(t *testing.T) *validator {
	dir := os.Getenv("NOTIFY_KEDA_CRDS")
	if dir == "" {
		t.Fatal("NOTIFY_KEDA_CRDS must name the directory of KEDA's CRDs (dev/helm-check.sh sets it)")
	}
	v, err := newValidator([]string{
		filepath.Join(dir, "keda.sh_scaledobjects.yaml"),
		filepath.Join(dir, "keda.sh_triggerauthentications.yaml"),
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func errorsOf(t *testing.T, v *validator, stream string) string {
	t.Helper()
	return strings.Join(v.validateStream([]byte(stream)).errors, "\n")
}

func TestValidManifestsPass(t *testing.T) {
	v := kedaValidator(t)
	service := "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: x}, ports: [{port: 80}]}\n"
	scaled := "---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: so}\nspec:\n  scaleTargetRef: {name: d}\n  triggers: [{type: kafka, metadata: {topic: t}}]\n"
	if errs := errorsOf(t, v, deployment+service+scaled); errs != "" {
		t.Fatalf("valid manifests failed:\n%s", errs)
	}
}

func TestEachKindOfMistakeFails(t *testing.T) {
	v := kedaValidator(t)
	cases := map[string]struct{ doc, want string }{
		"unknown field": {strings.Replace(deployment, "replicas: 2", "replica: 2", 1), `unknown field "replica"`},
		"wrong type":    {strings.Replace(deployment, "replicas: 2", "replicas: two", 1), "cannot unmarshal"},
		"unknown kind":  {"apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n", "no Go type or CRD schema"},
		"name too long": {strings.Replace(deployment, "name: d,", "name: "+strings.Repeat("d", 64)+",", 1), "must be no more than 63"},
		"service selects nothing": {deployment + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: y}, ports: [{port: 80}]}\n",
			"matches no rendered Deployment"},
		"KEDA unknown field": {deployment + "---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: so}\nspec:\n  scaleTargetRef: {name: d}\n  maxReplicas: 3\n  triggers: [{type: kafka, metadata: {topic: t}}]\n",
			"unknown fields: spec.maxReplicas"},
		"KEDA wrong type": {deployment + "---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: so}\nspec:\n  scaleTargetRef: {name: d}\n  maxReplicaCount: many\n  triggers: [{type: kafka, metadata: {topic: t}}]\n",
			"spec.maxReplicaCount"},
		"KEDA missing required": {deployment + "---\napiVersion: keda.sh/v1alpha1\nkind: ScaledObject\nmetadata: {name: so}\nspec:\n  scaleTargetRef: {name: d}\n",
			"spec.triggers"},
		"Strimzi ACL operation": {"apiVersion: kafka.strimzi.io/v1beta2\nkind: KafkaUser\nmetadata: {name: u, labels: {strimzi.io/cluster: c}}\nspec:\n  authorization:\n    type: simple\n    acls: [{resource: {type: topic, name: t}, operations: [Reed]}]\n",
			`"Reed" is not a Kafka operation`},
		"ServiceMonitor unknown field": {"apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: m}\nspec: {selector: {}, endpoint: []}\n",
			`unknown field "endpoint"`},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			errs := errorsOf(t, v, c.doc)
			if !strings.Contains(errs, c.want) {
				t.Fatalf("want an error containing %q, got:\n%s", c.want, errs)
			}
		})
	}
}
