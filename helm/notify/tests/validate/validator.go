package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

type validator struct {
	crds map[string]*crdSchema // "apiVersion/kind"
}

type report struct {
	decoded []object
	objects int
	kinds   map[string]int
	errors  []string
}

// object is what the cross-object checks need of each decoded manifest.
type object struct {
	id        string // "Kind/name"
	kind      string
	name      string
	labels    map[string]string
	podLabels map[string]string // workloads: the pod template's labels
	value     any               // the typed value, or the map of a CRD object
}

func newValidator(crdPaths []string) (*validator, error) {
	v := &validator{crds: map[string]*crdSchema{}}
	for _, path := range crdPaths {
		schemas, err := loadCRD(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		for key, s := range schemas {
			v.crds[key] = s
		}
	}
	return v, nil
}

// validateStream checks every document of a multi-document YAML stream, then the references
// between them.
func (v *validator) validateStream(data []byte) report {
	r := report{kinds: map[string]int{}}
	var objects []object
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.errors = append(r.errors, fmt.Sprintf("reading a document: %v", err))
			break
		}
		if isEmpty(doc) {
			continue
		}
		r.objects++
		obj, err := v.validateDocument(doc)
		if err != nil {
			r.errors = append(r.errors, err.Error())
			continue
		}
		r.kinds[obj.kind]++
		objects = append(objects, obj)
	}
	r.errors = append(r.errors, crossCheck(objects)...)
	r.decoded = objects
	return r
}

// isEmpty: a document holding only comments (a template that rendered nothing).
func isEmpty(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		t := strings.TrimSpace(line)
		if t != "" && t != "---" && !strings.HasPrefix(t, "#") {
			return false
		}
	}
	return true
}

func (v *validator) validateDocument(doc []byte) (object, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name   string            `json:"name"`
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return object{}, fmt.Errorf("not a Kubernetes object: %v\n%s", err, firstLines(doc))
	}
	id := fmt.Sprintf("%s/%s", head.Kind, head.Metadata.Name)
	if head.APIVersion == "" || head.Kind == "" {
		return object{}, fmt.Errorf("%s: apiVersion and kind are required\n%s", id, firstLines(doc))
	}
	obj := object{id: id, kind: head.Kind, name: head.Metadata.Name, labels: head.Metadata.Labels}
	key := head.APIVersion + "/" + head.Kind
	if schema, ok := v.crds[key]; ok {
		value, err := schema.validate(doc)
		if err != nil {
			return obj, fmt.Errorf("%s (%s, CRD schema): %v", id, head.APIVersion, err)
		}
		obj.value = value
		return obj, nil
	}
	newValue, ok := typed[key]
	if !ok {
		return obj, fmt.Errorf("%s: no Go type or CRD schema for %s here: add one to validate it", id, key)
	}
	value := newValue()
	if err := yaml.UnmarshalStrict(doc, value); err != nil {
		return obj, fmt.Errorf("%s (%s): %v", id, head.APIVersion, err)
	}
	if c, ok := value.(interface{ check() []string }); ok {
		if errs := c.check(); len(errs) > 0 {
			return obj, fmt.Errorf("%s (%s): %s", id, head.APIVersion, strings.Join(errs, "; "))
		}
	}
	obj.value = value
	obj.podLabels = podLabels(value)
	return obj, nil
}

func firstLines(doc []byte) string {
	lines := strings.SplitN(string(doc), "\n", 6)
	if len(lines) > 5 {
		lines = lines[:5]
	}
	return "  | " + strings.Join(lines, "\n  | ")
}
