package unixsock_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spiffe-hw/spire-hw/internal/unixsock"
)

// A daemon's admin socket: the missing "private" directory is created
// 0770, the socket gets 0770 whatever the umask, and Close removes the
// socket but leaves the directory.
func ExampleListen() {
	base, err := os.MkdirTemp("", "example")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(base)
	path := filepath.Join(base, "private", "api.sock")

	l, err := unixsock.Listen(path, 0o770, 0o770)
	if err != nil {
		fmt.Println(err)
		return
	}
	sock, _ := os.Lstat(path)
	dir, _ := os.Stat(filepath.Dir(path))
	fmt.Println(sock.Mode(), dir.Mode())

	l.Close()
	_, err = os.Lstat(path)
	fmt.Println("socket removed:", os.IsNotExist(err))

	// A socket path that names a regular file is refused; the file stays.
	file := filepath.Join(base, "not-a-socket")
	_ = os.WriteFile(file, []byte("kept"), 0o600)
	_, err = unixsock.Listen(file, 0o770, 0o770)
	fmt.Println(err != nil)
	// Output:
	// Srwxrwx--- drwxrwx---
	// socket removed: true
	// true
}
