// compose-config loads and validates compose files the way `docker compose config -q`
// does (docker compose v2 is built on this loader, compose-spec/compose-go), for
// machines without the docker compose plugin. Exit 0 and no output when valid; the
// loader's warnings and the first error on stderr otherwise.
//
//	compose-config docker-compose.yml
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/loader"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-config <compose file>")
		os.Exit(2)
	}
	file := os.Args[1]
	options, err := cli.NewProjectOptions([]string{file}, cli.WithWorkingDirectory(filepath.Dir(file)), cli.WithName(projectName(file)))
	if err == nil {
		_, err = options.LoadProject(context.Background())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

// projectName is what docker compose takes without -p or a top-level name: the
// directory holding the file, normalized (lower case, no characters a name refuses).
func projectName(file string) string {
	absolute, err := filepath.Abs(file)
	if err != nil {
		return "compose"
	}
	return loader.NormalizeProjectName(filepath.Base(filepath.Dir(absolute)))
}
