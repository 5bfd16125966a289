package main

import (
	"fmt"
	"io"
)

// Commands not built yet. Each moves to its own file when it is.

func cmdCheck(args []string, stdout, stderr io.Writer) int { return notYet("check", stderr) }

func notYet(name string, stderr io.Writer) int {
	fmt.Fprintf(stderr, "postern %s: not available in this build\n", name)
	return 2
}
