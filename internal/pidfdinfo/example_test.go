package pidfdinfo_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/spiffe-hw/spire-hw/internal/pidfdinfo"
	"golang.org/x/sys/unix"
)

// The cgroup v2 ID of this very process, by its pidfd.
func ExampleGet() {
	fd, err := unix.PidfdOpen(os.Getpid(), 0)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer unix.Close(fd)
	info, err := pidfdinfo.Get(fd, pidfdinfo.InfoCgroupID)
	switch {
	case errors.Is(err, pidfdinfo.ErrUnsupported):
		fmt.Println("before Linux 6.13: read /proc/<pid>/cgroup instead")
	case errors.Is(err, pidfdinfo.ErrExited):
		fmt.Println("the process has exited")
	case err != nil:
		fmt.Println(err)
	case info.Mask&pidfdinfo.InfoCgroupID != 0:
		fmt.Println("cgroup ID", info.CgroupID)
	}
}
