package main

import (
	"fmt"
	"io"
)

// Commands not built yet. Each moves to its own file when it is.

func notYet(name string, stderr io.Writer) int {
	fmt.Fprintf(stderr, "postern %s: not available in this build\n", name)
	return 2
}
