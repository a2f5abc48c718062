package kubelet

import (
	"context"
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/sim/dockerd"
)

// NewUID returns a random pod UID in Kubernetes' form (a version 4 UUID).
func NewUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// CgroupParent is the cgroup a BestEffort pod's containers live under with
// the kubelet's cgroupfs driver.
func CgroupParent(podUID string) string { return "/kubepods/besteffort/pod" + podUID }

// RunContainer starts a container of the pod podUID on d, running cmd in
// image, under the pod's cgroup parent, and returns its status as the
// kubelet would list it, with the running container.
func RunContainer(tb testing.TB, d *dockerd.Daemon, podUID, name, image string, cmd []string) (Container, *dockerd.Container) {
	tb.Helper()
	c := d.Run(tb, dockerd.RunOptions{Image: image, Cmd: cmd, CgroupParent: CgroupParent(podUID)})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	img, err := d.Client.ImageInspect(ctx, image)
	if err != nil {
		tb.Fatalf("kubelet: inspect image %s: %v", image, err)
	}
	// An imported image has no repository digest; the kubelet then
	// reports the local image ID.
	imageID := "docker://" + img.ID
	if len(img.RepoDigests) > 0 {
		imageID = "docker-pullable://" + img.RepoDigests[0]
	}
	return Container{Name: name, Image: image, ImageID: imageID, ContainerID: "docker://" + c.ID}, c
}
