package containerinfo_test

import (
	"fmt"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
)

// A pod's container on a node with the systemd cgroup driver and
// containerd, on a hybrid host where the unified hierarchy still shows the
// runtime's service: the systemd driver's underscores become the pod UID's
// dashes, and the service line names no container.
func ExampleProc_Locate() {
	cgs, err := containerinfo.ParseCgroups([]byte(
		"1:name=systemd:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod2c48913c_b29f_11e7_9350_020968147796.slice/cri-containerd-9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961.scope\n" +
			"0::/system.slice/containerd.service\n"))
	if err != nil {
		fmt.Println(err)
		return
	}
	info, err := containerinfo.Proc{Cgroups: cgs}.Locate(true)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(info.PodUID)
	fmt.Println(info.ContainerID)
	// Output:
	// 2c48913c-b29f-11e7-9350-020968147796
	// 9bca8d63d5fa610783847915bcff0ecac1273e5b4bed3f6fa1b07350e0135961
}
