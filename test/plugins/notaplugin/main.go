// Command notaplugin is a plain program, not a plugin: a host that is asked
// to load it must fail the handshake cleanly instead of hanging.
package main

import "fmt"

func main() {
	fmt.Println("this is not a plugin")
}
