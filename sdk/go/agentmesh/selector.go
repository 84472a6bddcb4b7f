package agentmesh

import (
	"fmt"
	"regexp"
	"strings"

	agentmeshv1 "github.com/agentmesh/agentmesh/sdk/go/gen/agentmesh/v1"
)

var setRequirement = regexp.MustCompile(`^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$`)

// ParseLabelSelector reads the compact selector syntax the CLI and the other
// SDKs use: comma-separated `key=value`, `key in (a|b)`, `key notin (a|b)`,
// `key` (exists) and `!key` (does not exist). The server validates keys and values.
func ParseLabelSelector(text string) (*agentmeshv1.LabelSelector, error) {
	selector := &agentmeshv1.LabelSelector{MatchLabels: map[string]string{}}
	for _, rawPart := range strings.Split(text, ",") {
		part := strings.TrimSpace(rawPart)
		switch {
		case part == "":
			continue
		case setRequirement.MatchString(part):
			match := setRequirement.FindStringSubmatch(part)
			operator := agentmeshv1.LabelRequirement_OPERATOR_IN
			if match[2] == "notin" {
				operator = agentmeshv1.LabelRequirement_OPERATOR_NOT_IN
			}
			var values []string
			for _, value := range strings.Split(match[3], "|") {
				if value = strings.TrimSpace(value); value != "" {
					values = append(values, value)
				}
			}
			selector.MatchExpressions = append(selector.MatchExpressions, &agentmeshv1.LabelRequirement{Key: match[1], Operator: operator, Values: values})
		case strings.Contains(part, "="):
			key, value, _ := strings.Cut(part, "=")
			if strings.TrimSpace(key) == "" {
				return nil, fmt.Errorf("%w: label selector %q: empty key", ErrInvalidArgument, part)
			}
			selector.MatchLabels[strings.TrimSpace(key)] = strings.TrimSpace(value)
		case strings.HasPrefix(part, "!"):
			selector.MatchExpressions = append(selector.MatchExpressions, &agentmeshv1.LabelRequirement{Key: part[1:], Operator: agentmeshv1.LabelRequirement_OPERATOR_DOES_NOT_EXIST})
		default:
			selector.MatchExpressions = append(selector.MatchExpressions, &agentmeshv1.LabelRequirement{Key: part, Operator: agentmeshv1.LabelRequirement_OPERATOR_EXISTS})
		}
	}
	return selector, nil
}
