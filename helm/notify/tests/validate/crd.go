package main

import (
	"fmt"
	"os"
	"strings"

	"k8s.io/apiextensions-apiserver/pkg/apis/apiextensions"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	structuralschema "k8s.io/apiextensions-apiserver/pkg/apiserver/schema"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/defaulting"
	"k8s.io/apiextensions-apiserver/pkg/apiserver/schema/pruning"
	apivalidation "k8s.io/apiextensions-apiserver/pkg/apiserver/validation"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/yaml"
)

// crdSchema is one served version of a CustomResourceDefinition.
type crdSchema struct {
	structural *structuralschema.Structural
	validator  apivalidation.SchemaValidator
}

// loadCRD reads a CustomResourceDefinition and returns a schema per served version, keyed
// "group/version/Kind".
func loadCRD(path string) (map[string]*crdSchema, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(data, &crd); err != nil {
		return nil, fmt.Errorf("not a CustomResourceDefinition: %w", err)
	}
	out := map[string]*crdSchema{}
	for _, version := range crd.Spec.Versions {
		if !version.Served || version.Schema == nil || version.Schema.OpenAPIV3Schema == nil {
			continue
		}
		var internal apiextensions.JSONSchemaProps
		if err := apiextensionsv1.Convert_v1_JSONSchemaProps_To_apiextensions_JSONSchemaProps(
			version.Schema.OpenAPIV3Schema, &internal, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", version.Name, err)
		}
		structural, err := structuralschema.NewStructural(&internal)
		if err != nil {
			return nil, fmt.Errorf("%s: not a structural schema: %w", version.Name, err)
		}
		validator, _, err := apivalidation.NewSchemaValidator(&internal)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", version.Name, err)
		}
		key := fmt.Sprintf("%s/%s/%s", crd.Spec.Group, version.Name, crd.Spec.Names.Kind)
		out[key] = &crdSchema{structural: structural, validator: validator}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no served version with a schema")
	}
	return out, nil
}

// validate does what the API server does with a custom resource: fields the schema does not
// know are an error here (the server would drop them silently), then defaults, then the
// schema's validation.
func (s *crdSchema) validate(doc []byte) (map[string]any, error) {
	jsonDoc, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	var obj map[string]any
	if err := utiljson.Unmarshal(jsonDoc, &obj); err != nil {
		return nil, err
	}
	unknown := pruning.PruneWithOptions(obj, s.structural, true,
		structuralschema.UnknownFieldPathOptions{TrackUnknownFieldPaths: true})
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unknown fields: %s", strings.Join(unknown, ", "))
	}
	defaulting.Default(obj, s.structural)
	if errs := apivalidation.ValidateCustomResource(nil, obj, s.validator); len(errs) > 0 {
		return nil, errs.ToAggregate()
	}
	return obj, nil
}
