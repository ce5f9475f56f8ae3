package main

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Strimzi's KafkaTopic and KafkaUser (kafka.strimzi.io/v1beta2), as documented in Strimzi's
// API reference. No Go module carrying Strimzi's types or CRDs is served by the registries
// these machines reach, so these are our own structs of the documented fields: strict
// decoding rejects fields Strimzi does not document and wrong types, and check() the
// documented enums and bounds. They are not Strimzi's published schema.

type kafkaTopic struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		TopicName  string         `json:"topicName,omitempty"`
		Partitions *int32         `json:"partitions,omitempty"`
		Replicas   *int32         `json:"replicas,omitempty"`
		Config     map[string]any `json:"config,omitempty"`
	} `json:"spec"`
}

func (t *kafkaTopic) check() []string {
	var errs []string
	if t.Labels["strimzi.io/cluster"] == "" {
		errs = append(errs, "metadata.labels[strimzi.io/cluster] is required by the topic operator")
	}
	if p := t.Spec.Partitions; p != nil && *p < 1 {
		errs = append(errs, fmt.Sprintf("spec.partitions %d is below 1", *p))
	}
	if r := t.Spec.Replicas; r != nil && (*r < 1 || *r > 32767) {
		errs = append(errs, fmt.Sprintf("spec.replicas %d is not in 1..32767", *r))
	}
	for k, v := range t.Spec.Config {
		switch v.(type) {
		case string, bool, float64, int64:
		default:
			errs = append(errs, fmt.Sprintf("spec.config[%s] is not a string, number or boolean", k))
		}
	}
	return errs
}

type kafkaUser struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		Authentication *struct {
			Type string `json:"type"`
		} `json:"authentication,omitempty"`
		Authorization *struct {
			Type string     `json:"type"`
			ACLs []kafkaACL `json:"acls"`
		} `json:"authorization,omitempty"`
		Quotas *struct {
			ProducerByteRate       *int32   `json:"producerByteRate,omitempty"`
			ConsumerByteRate       *int32   `json:"consumerByteRate,omitempty"`
			RequestPercentage      *int32   `json:"requestPercentage,omitempty"`
			ControllerMutationRate *float64 `json:"controllerMutationRate,omitempty"`
		} `json:"quotas,omitempty"`
	} `json:"spec"`
}

type kafkaACL struct {
	Type     string `json:"type,omitempty"`
	Resource struct {
		Type        string `json:"type"`
		Name        string `json:"name,omitempty"`
		PatternType string `json:"patternType,omitempty"`
	} `json:"resource"`
	Operations []string `json:"operations"`
	Host       string   `json:"host,omitempty"`
}

var (
	userAuthTypes    = set("tls", "tls-external", "scram-sha-512")
	aclTypes         = set("allow", "deny")
	aclResourceTypes = set("topic", "group", "cluster", "transactionalId")
	aclPatternTypes  = set("literal", "prefix")
	aclOperations    = set("Read", "Write", "Create", "Delete", "Alter", "Describe",
		"ClusterAction", "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All")
)

func (u *kafkaUser) check() []string {
	var errs []string
	if u.Labels["strimzi.io/cluster"] == "" {
		errs = append(errs, "metadata.labels[strimzi.io/cluster] is required by the user operator")
	}
	if a := u.Spec.Authentication; a != nil && !userAuthTypes[a.Type] {
		errs = append(errs, fmt.Sprintf("spec.authentication.type %q is not one of tls, tls-external, scram-sha-512", a.Type))
	}
	z := u.Spec.Authorization
	if z == nil {
		return errs
	}
	if z.Type != "simple" {
		errs = append(errs, fmt.Sprintf("spec.authorization.type %q is not simple", z.Type))
	}
	for i, acl := range z.ACLs {
		at := fmt.Sprintf("spec.authorization.acls[%d]", i)
		if acl.Type != "" && !aclTypes[acl.Type] {
			errs = append(errs, fmt.Sprintf("%s.type %q is not allow or deny", at, acl.Type))
		}
		r := acl.Resource
		if !aclResourceTypes[r.Type] {
			errs = append(errs, fmt.Sprintf("%s.resource.type %q is not topic, group, cluster or transactionalId", at, r.Type))
		}
		if r.Type != "cluster" && r.Name == "" {
			errs = append(errs, fmt.Sprintf("%s.resource.name is required for a %s", at, r.Type))
		}
		if r.PatternType != "" && !aclPatternTypes[r.PatternType] {
			errs = append(errs, fmt.Sprintf("%s.resource.patternType %q is not literal or prefix", at, r.PatternType))
		}
		if len(acl.Operations) == 0 {
			errs = append(errs, fmt.Sprintf("%s.operations is empty", at))
		}
		for _, op := range acl.Operations {
			if !aclOperations[op] {
				errs = append(errs, fmt.Sprintf("%s.operations: %q is not a Kafka operation", at, op))
			}
		}
	}
	return errs
}

func set(values ...string) map[string]bool {
	m := make(map[string]bool, len(values))
	for _, v := range values {
		m[v] = true
	}
	return m
}
