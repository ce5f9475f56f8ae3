package main

import (
	"fmt"
	"sort"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

func podLabels(value any) map[string]string {
	switch w := value.(type) {
	case *appsv1.Deployment:
		return w.Spec.Template.Labels
	case *batchv1.Job:
		return w.Spec.Template.Labels
	}
	return nil
}

// crossCheck: names and labels Kubernetes accepts, and references that resolve within the
// rendered set (a Service that selects no pod is a silent outage).
func crossCheck(objects []object) []string {
	var errs []string
	byID := map[string]object{}
	for _, o := range objects {
		if _, dup := byID[o.id]; dup {
			errs = append(errs, fmt.Sprintf("%s: rendered twice", o.id))
		}
		byID[o.id] = o
		errs = append(errs, checkMeta(o)...)
	}
	selects := func(selector map[string]string) bool {
		if len(selector) == 0 {
			return false
		}
		for _, o := range objects {
			if o.kind == "Deployment" && subset(selector, o.podLabels) {
				return true
			}
		}
		return false
	}
	for _, o := range objects {
		switch v := o.value.(type) {
		case *appsv1.Deployment:
			if v.Spec.Selector == nil || !subset(v.Spec.Selector.MatchLabels, v.Spec.Template.Labels) {
				errs = append(errs, fmt.Sprintf("%s: spec.selector does not match its pod template's labels", o.id))
			}
		case *corev1.Service:
			if !selects(v.Spec.Selector) {
				errs = append(errs, fmt.Sprintf("%s: spec.selector matches no rendered Deployment's pods", o.id))
			}
		case *policyv1.PodDisruptionBudget:
			if v.Spec.Selector == nil || !selects(v.Spec.Selector.MatchLabels) {
				errs = append(errs, fmt.Sprintf("%s: spec.selector matches no rendered Deployment's pods", o.id))
			}
		case *autoscalingv2.HorizontalPodAutoscaler:
			if _, ok := byID["Deployment/"+v.Spec.ScaleTargetRef.Name]; !ok {
				errs = append(errs, fmt.Sprintf("%s: scales Deployment %s, which is not rendered", o.id, v.Spec.ScaleTargetRef.Name))
			}
		case *monitoringv1.ServiceMonitor:
			found := false
			for _, s := range objects {
				if s.kind == "Service" && subset(v.Spec.Selector.MatchLabels, s.labels) {
					found = true
				}
			}
			if !found {
				errs = append(errs, fmt.Sprintf("%s: spec.selector matches no rendered Service", o.id))
			}
		case map[string]any:
			if o.kind == "ScaledObject" {
				errs = append(errs, checkScaledObject(o, v, byID)...)
			}
		}
	}
	sort.Strings(errs)
	return errs
}

func checkScaledObject(o object, v map[string]any, byID map[string]object) []string {
	var errs []string
	spec, _ := v["spec"].(map[string]any)
	target, _ := spec["scaleTargetRef"].(map[string]any)
	name, _ := target["name"].(string)
	if _, ok := byID["Deployment/"+name]; !ok {
		errs = append(errs, fmt.Sprintf("%s: scales Deployment %q, which is not rendered", o.id, name))
	}
	triggers, _ := spec["triggers"].([]any)
	for i, t := range triggers {
		trigger, _ := t.(map[string]any)
		ref, _ := trigger["authenticationRef"].(map[string]any)
		if ref == nil {
			continue
		}
		authName, _ := ref["name"].(string)
		kind, _ := ref["kind"].(string)
		if kind == "" {
			kind = "TriggerAuthentication"
		}
		if _, ok := byID[kind+"/"+authName]; !ok && kind == "TriggerAuthentication" {
			errs = append(errs, fmt.Sprintf("%s: triggers[%d] uses TriggerAuthentication %q, which is not rendered", o.id, i, authName))
		}
	}
	return errs
}

func checkMeta(o object) []string {
	var errs []string
	if o.name == "" {
		return []string{fmt.Sprintf("%s: metadata.name is empty", o.id)}
	}
	// Every name here ends up in a label value or a DNS label (pods, Services): 63 at most.
	for _, msg := range validation.IsDNS1123Label(o.name) {
		errs = append(errs, fmt.Sprintf("%s: metadata.name: %s", o.id, msg))
	}
	if o.kind == "Service" {
		for _, msg := range validation.IsDNS1035Label(o.name) {
			errs = append(errs, fmt.Sprintf("%s: Service name: %s", o.id, msg))
		}
	}
	for _, labels := range []map[string]string{o.labels, o.podLabels} {
		for k, v := range labels {
			for _, msg := range validation.IsQualifiedName(k) {
				errs = append(errs, fmt.Sprintf("%s: label key %q: %s", o.id, k, msg))
			}
			for _, msg := range validation.IsValidLabelValue(v) {
				errs = append(errs, fmt.Sprintf("%s: label %s=%q: %s", o.id, k, v, msg))
			}
		}
	}
	return errs
}

func subset(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}
