package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

func extractTo(dir string, objects []object) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, o := range objects {
		var err error
		switch v := o.value.(type) {
		case *appsv1.Deployment:
			err = writeContainers(dir, "deployment-"+v.Name, v.Spec.Template.Spec)
		case *batchv1.Job:
			err = writeContainers(dir, "job-"+v.Name, v.Spec.Template.Spec)
		case *corev1.ConfigMap:
			sub := filepath.Join(dir, "configmap-"+v.Name)
			if err = os.MkdirAll(sub, 0o755); err == nil {
				for key, data := range v.Data {
					if err = os.WriteFile(filepath.Join(sub, key), []byte(data), 0o644); err != nil {
						break
					}
				}
			}
		case *monitoringv1.PrometheusRule:
			var data []byte
			// promtool reads the groups of a rule file: the spec is exactly that.
			if data, err = yaml.Marshal(v.Spec); err == nil {
				err = os.WriteFile(filepath.Join(dir, "prometheusrule-"+v.Name+".yaml"), data, 0o644)
			}
		}
		if err != nil {
			return fmt.Errorf("%s: %w", o.id, err)
		}
	}
	return nil
}

func writeContainers(dir, prefix string, pod corev1.PodSpec) error {
	for _, c := range append(append([]corev1.Container{}, pod.InitContainers...), pod.Containers...) {
		base := filepath.Join(dir, prefix+"-"+c.Name)
		if err := os.WriteFile(base+".args", []byte(strings.Join(c.Args, "\n")+"\n"), 0o644); err != nil {
			return err
		}
		var env strings.Builder
		for _, e := range c.Env {
			value := e.Value
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				value = fmt.Sprintf("@secret:%s/%s", e.ValueFrom.SecretKeyRef.Name, e.ValueFrom.SecretKeyRef.Key)
			}
			fmt.Fprintf(&env, "%s=%s\n", e.Name, value)
		}
		if err := os.WriteFile(base+".env", []byte(env.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}
