package k8s_test

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/k8s"
	"github.com/spiffe-hw/spire-hw/sim/dockerd"
	"github.com/spiffe-hw/spire-hw/sim/kubelet"
	"github.com/spiffe-hw/spire-hw/sim/x509/testpki"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
	"golang.org/x/sys/unix"
)

func TestMain(m *testing.M) { os.Exit(dockerd.Main(m)) }

const sleeper = "github.com/spiffe-hw/spire-hw/sim/dockerd/cmd/svid-client"

// fixture is a kubelet and real containers on the private dockerd, under
// kubepods cgroups, shared by the subtests of TestAttest.
type fixture struct {
	kl             *kubelet.Kubelet
	dir            string
	caPath, token  string
	podA           kubelet.Pod
	pidA, pidfdA   int
	contA          string // bare container ID
	image, imageID string
	d              *dockerd.Daemon
}

func newFixture(t *testing.T) *fixture {
	d := dockerd.Start(t)
	f := &fixture{d: d, kl: kubelet.Start(t, kubelet.Options{ReadOnly: true}), dir: t.TempDir()}
	f.caPath, f.token = f.kl.WriteFiles(t, f.dir)
	f.image = d.Image(t, map[string]string{"/sleeper": sleeper})
	uid := kubelet.NewUID()
	st, c := kubelet.RunContainer(t, d, uid, "workload", f.image, []string{"/sleeper", "-sleep"})
	f.imageID, f.contA = st.ImageID, c.ID
	f.pidA, f.pidfdA = c.PID, pidfd(t, c.PID)
	f.podA = kubelet.Pod{
		Name: "web-7d4b9-x2x9z", Namespace: "shop", UID: uid, ServiceAccount: "web", NodeName: f.kl.NodeName(),
		Labels:         map[string]string{"app": "web", "tier": "front"},
		Owners:         []kubelet.Owner{{Kind: "ReplicaSet", Name: "web-7d4b9", UID: "0b8e3f0c-3c39-4a0b-9d7e-5f0a1c2b3d4e"}},
		InitContainers: []kubelet.Container{{Name: "init", Image: "example.org/init:1", ImageID: "docker-pullable://example.org/init@sha256:" + strings.Repeat("ab", 32), ContainerID: "docker://" + strings.Repeat("1", 64)}},
		Containers: []kubelet.Container{
			st,
			{Name: "sidecar", Image: "example.org/sidecar:2", ImageID: "docker-pullable://example.org/sidecar@sha256:" + strings.Repeat("cd", 32), ContainerID: "docker://" + strings.Repeat("2", 64)},
		},
	}
	f.kl.PutPod(f.podA)
	// Another pod on the node, which must never lend its selectors.
	f.kl.PutPod(kubelet.Pod{Name: "other", Namespace: "other", UID: kubelet.NewUID(), ServiceAccount: "other", NodeName: f.kl.NodeName(),
		Containers: []kubelet.Container{{Name: "other", Image: "example.org/other:1", ImageID: "docker://sha256:" + strings.Repeat("ef", 32), ContainerID: "docker://" + strings.Repeat("3", 64)}}})
	return f
}

func pidfd(t *testing.T, pid int) int {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	t.Cleanup(func() { unix.Close(fd) })
	return fd
}

// secure is the configuration that reaches f.kl's secure port with its CA
// and token; poll settings keep failing cases short.
func (f *fixture) secure() k8s.Config {
	return k8s.Config{
		KubeletSecurePort: f.kl.SecurePort(), KubeletCAPath: f.caPath, TokenPath: f.token,
		MaxPollAttempts: 3, PollRetryInterval: 20 * time.Millisecond,
	}
}

func newAttestor(t *testing.T, cfg k8s.Config) *k8s.Attestor {
	t.Helper()
	a, err := k8s.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

func attest(t *testing.T, a *k8s.Attestor, pid, fd int) ([]string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	sel, err := a.Attest(ctx, int32(pid), fd)
	return values(t, sel), err
}

func values(t *testing.T, sel []*types.Selector) []string {
	t.Helper()
	var out []string
	for _, s := range sel {
		if s.Type != "k8s" {
			t.Errorf("selector type %q, want k8s", s.Type)
		}
		out = append(out, s.Value)
	}
	return out
}

// wantA is pod A's selectors for its workload container, in the order the
// attestor emits them (SPIRE's, with its map-ordered parts sorted).
func (f *fixture) wantA(containerSelectors bool) []string {
	p := f.podA
	want := []string{
		"sa:web", "ns:shop", "node-name:" + f.kl.NodeName(), "pod-uid:" + p.UID, "pod-name:" + p.Name,
		"pod-image-count:2", "pod-init-image-count:1",
	}
	imgs := []string{f.image, f.imageID, p.Containers[1].Image, p.Containers[1].ImageID}
	slices.Sort(imgs)
	for _, i := range imgs {
		want = append(want, "pod-image:"+i)
	}
	want = append(want,
		"pod-init-image:"+p.InitContainers[0].ImageID, "pod-init-image:"+p.InitContainers[0].Image,
		"pod-label:app:web", "pod-label:tier:front",
		"pod-owner:ReplicaSet:web-7d4b9", "pod-owner-uid:ReplicaSet:0b8e3f0c-3c39-4a0b-9d7e-5f0a1c2b3d4e")
	if containerSelectors {
		ci := []string{f.image, f.imageID}
		slices.Sort(ci)
		want = append(want, "container-name:workload", "container-image:"+ci[0], "container-image:"+ci[1])
	}
	return want
}

func TestAttest(t *testing.T) {
	f := newFixture(t)

	t.Run("Selectors", func(t *testing.T) {
		got, err := attest(t, newAttestor(t, f.secure()), f.pidA, f.pidfdA)
		if err != nil {
			t.Fatal(err)
		}
		if want := f.wantA(true); !slices.Equal(got, want) {
			t.Fatalf("selectors\n got %q\nwant %q", got, want)
		}
	})

	t.Run("ControllerManagerEntry", func(t *testing.T) {
		// spire-controller-manager's ClusterSPIFFEID entries always carry
		// k8s:pod-uid:<uid> (renderPodEntry) and, from
		// workloadSelectorTemplates, usually k8s:ns, k8s:sa or
		// k8s:pod-label; an entry matches when all are among the
		// workload's selectors.
		got, err := attest(t, newAttestor(t, f.secure()), f.pidA, f.pidfdA)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"pod-uid:" + f.podA.UID, "ns:shop", "sa:web", "pod-label:app:web", "container-name:workload"} {
			if !slices.Contains(got, want) {
				t.Errorf("k8s:%s missing from %q", want, got)
			}
		}
	})

	t.Run("NodeNameVerified", func(t *testing.T) {
		// With node_name the kubelet is dialled by name and its
		// certificate checked for that name too.
		cfg := f.secure()
		cfg.NodeName = "localhost"
		got, err := attest(t, newAttestor(t, cfg), f.pidA, f.pidfdA)
		if err != nil || !slices.Equal(got, f.wantA(true)) {
			t.Fatalf("got %q, %v", got, err)
		}
	})

	t.Run("ReadOnlyPort", func(t *testing.T) {
		got, err := attest(t, newAttestor(t, k8s.Config{KubeletReadOnlyPort: f.kl.ReadOnlyPort()}), f.pidA, f.pidfdA)
		if err != nil || !slices.Equal(got, f.wantA(true)) {
			t.Fatalf("got %q, %v", got, err)
		}
	})

	t.Run("LegacyLocator", func(t *testing.T) {
		cfg := f.secure()
		cfg.LegacyContainerLocator = true
		got, err := attest(t, newAttestor(t, cfg), f.pidA, f.pidfdA)
		if err != nil || !slices.Equal(got, f.wantA(true)) {
			t.Fatalf("got %q, %v", got, err)
		}
	})

	t.Run("DisableContainerSelectors", func(t *testing.T) {
		cfg := f.secure()
		cfg.DisableContainerSelectors = true
		a := newAttestor(t, cfg)
		got, err := attest(t, a, f.pidA, f.pidfdA)
		if err != nil || !slices.Equal(got, f.wantA(false)) {
			t.Fatalf("got %q, %v", got, err)
		}
		// The pod alone is enough then, even while the container's status
		// has no ID yet (a postStart hook still running).
		p := f.podA
		p.Containers = slices.Clone(p.Containers)
		p.Containers[0].ContainerID = ""
		f.kl.PutPod(p)
		defer f.kl.PutPod(f.podA)
		got, err = attest(t, newAttestor(t, cfg), f.pidA, f.pidfdA)
		if err != nil || !slices.Contains(got, "pod-uid:"+p.UID) || slices.Contains(got, "container-name:workload") {
			t.Fatalf("got %q, %v", got, err)
		}
	})

	t.Run("WrongCA", func(t *testing.T) {
		other, err := testpki.NewRoot("not the kubelet's CA")
		if err != nil {
			t.Fatal(err)
		}
		for _, node := range []string{"", "localhost"} {
			cfg := f.secure()
			cfg.NodeName = node
			cfg.KubeletCAPath = filepath.Join(t.TempDir(), "ca.crt")
			if err := os.WriteFile(cfg.KubeletCAPath, testpki.CertsPEM(other.Cert), 0o644); err != nil {
				t.Fatal(err)
			}
			before := f.kl.Served()
			_, err := attest(t, newAttestor(t, cfg), f.pidA, f.pidfdA)
			if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
				t.Fatalf("node %q: err = %v, want an unknown-authority refusal", node, err)
			}
			if f.kl.Served() != before {
				t.Fatalf("node %q: the kubelet served a list to a client that does not trust it", node)
			}
		}
	})

	t.Run("SkipVerification", func(t *testing.T) {
		cfg := f.secure()
		cfg.KubeletCAPath = filepath.Join(t.TempDir(), "absent.crt")
		cfg.SkipKubeletVerification = true
		got, err := attest(t, newAttestor(t, cfg), f.pidA, f.pidfdA)
		if err != nil || !slices.Equal(got, f.wantA(true)) {
			t.Fatalf("got %q, %v", got, err)
		}
	})

	t.Run("TokenRefused", func(t *testing.T) {
		cfg := f.secure()
		cfg.TokenPath = filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(cfg.TokenPath, []byte("not-the-token\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := attest(t, newAttestor(t, cfg), f.pidA, f.pidfdA)
		if err == nil || !strings.Contains(err.Error(), "unexpected status code on pods response: 401") {
			t.Fatalf("err = %v, want the kubelet's 401", err)
		}
	})

	t.Run("TokenReloaded", func(t *testing.T) {
		cfg := f.secure()
		cfg.TokenPath = filepath.Join(t.TempDir(), "token")
		cfg.ReloadInterval = time.Millisecond
		if err := os.WriteFile(cfg.TokenPath, []byte(f.kl.Token()), 0o600); err != nil {
			t.Fatal(err)
		}
		a := newAttestor(t, cfg)
		if _, err := attest(t, a, f.pidA, f.pidfdA); err != nil {
			t.Fatal(err)
		}
		// The token rotates: the kubelet takes only the new one, which the
		// attestor must read from token_path again.
		old := f.kl.Token()
		defer f.kl.SetToken(old)
		f.kl.SetToken("rotated-token")
		if err := os.WriteFile(cfg.TokenPath, []byte("rotated-token"), 0o600); err != nil {
			t.Fatal(err)
		}
		time.Sleep(cfg.PollRetryInterval) // past reload_interval and the cache
		got, err := attest(t, a, f.pidA, f.pidfdA)
		if err != nil || !slices.Equal(got, f.wantA(true)) {
			t.Fatalf("after rotation: got %q, %v", got, err)
		}
	})

	t.Run("ClientCertificate", func(t *testing.T) {
		ca, err := testpki.NewRoot("kubelet client CA")
		if err != nil {
			t.Fatal(err)
		}
		kl := kubelet.Start(t, kubelet.Options{ClientCAs: pool(ca)})
		kl.PutPod(f.podA)
		cert, key, err := ca.Issue(testpki.Leaf{CommonName: "system:node:sim-node"})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		caPath, _ := kl.WriteFiles(t, dir)
		keyPEM, err := testpki.KeyPEM(key)
		if err != nil {
			t.Fatal(err)
		}
		cfg := k8s.Config{KubeletSecurePort: kl.SecurePort(), KubeletCAPath: caPath,
			CertificatePath: filepath.Join(dir, "client.crt"), PrivateKeyPath: filepath.Join(dir, "client.key")}
		if err := os.WriteFile(cfg.CertificatePath, testpki.CertsPEM(cert), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg.PrivateKeyPath, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := attest(t, newAttestor(t, cfg), f.pidA, f.pidfdA)
		if err != nil || !slices.Equal(got, f.wantA(true)) {
			t.Fatalf("got %q, %v", got, err)
		}
	})

	t.Run("PodListedLater", func(t *testing.T) {
		uid := kubelet.NewUID()
		st, c := kubelet.RunContainer(t, f.d, uid, "late", f.image, []string{"/sleeper", "-sleep"})
		fd := pidfd(t, c.PID)
		cfg := f.secure()
		cfg.MaxPollAttempts, cfg.PollRetryInterval = 200, 10*time.Millisecond
		a := newAttestor(t, cfg)
		type res struct {
			got []string
			err error
		}
		done := make(chan res, 1)
		before := f.kl.Served()
		go func() {
			got, err := attest(t, a, c.PID, fd)
			done <- res{got, err}
		}()
		// The pod shows up only after the attestor has asked three times.
		f.kl.WaitServed(t, before+3, 10*time.Second)
		p := kubelet.Pod{Name: "late", Namespace: "shop", UID: uid, ServiceAccount: "late", NodeName: f.kl.NodeName(), Containers: []kubelet.Container{st}}
		f.kl.PutPod(p)
		defer f.kl.DeletePod(uid)
		r := <-done
		if r.err != nil || !slices.Contains(r.got, "pod-uid:"+uid) || !slices.Contains(r.got, "container-name:late") {
			t.Fatalf("got %q, %v", r.got, r.err)
		}
	})

	t.Run("PodNeverListed", func(t *testing.T) {
		uid := kubelet.NewUID()
		_, c := kubelet.RunContainer(t, f.d, uid, "ghost", f.image, []string{"/sleeper", "-sleep"})
		cfg := f.secure()
		a := newAttestor(t, cfg)
		before := f.kl.Served()
		start := time.Now()
		got, err := attest(t, a, c.PID, pidfd(t, c.PID))
		if err == nil || !strings.Contains(err.Error(), "no selectors found after max poll attempts") {
			t.Fatalf("got %q, %v; want the max-poll-attempts refusal", got, err)
		}
		// One fetch per attempt, and the attempts' sleeps in between.
		if n := f.kl.Served() - before; n != cfg.MaxPollAttempts {
			t.Errorf("%d pod lists fetched, want %d (one per attempt)", n, cfg.MaxPollAttempts)
		}
		if d := time.Since(start); d < time.Duration(cfg.MaxPollAttempts-1)*cfg.PollRetryInterval {
			t.Errorf("gave up after %v, before the attempts' intervals had passed", d)
		}
	})

	t.Run("CanceledWhilePolling", func(t *testing.T) {
		uid := kubelet.NewUID()
		_, c := kubelet.RunContainer(t, f.d, uid, "ghost", f.image, []string{"/sleeper", "-sleep"})
		cfg := f.secure()
		cfg.MaxPollAttempts, cfg.PollRetryInterval = 1000, time.Second
		a := newAttestor(t, cfg)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := a.Attest(ctx, int32(c.PID), pidfd(t, c.PID))
		if err == nil || time.Since(start) > 5*time.Second {
			t.Fatalf("Attest returned %v after %v, want a prompt error", err, time.Since(start))
		}
	})

	t.Run("CachedListMissRefetches", func(t *testing.T) {
		// A long retry interval makes the cache last 5 s; a container that
		// starts meanwhile must still be found at once.
		cfg := f.secure()
		cfg.PollRetryInterval = 10 * time.Second
		a := newAttestor(t, cfg)
		if _, err := attest(t, a, f.pidA, f.pidfdA); err != nil {
			t.Fatal(err)
		}
		uid := kubelet.NewUID()
		st, c := kubelet.RunContainer(t, f.d, uid, "new", f.image, []string{"/sleeper", "-sleep"})
		f.kl.PutPod(kubelet.Pod{Name: "new", Namespace: "shop", UID: uid, Containers: []kubelet.Container{st}})
		defer f.kl.DeletePod(uid)
		start := time.Now()
		got, err := attest(t, a, c.PID, pidfd(t, c.PID))
		if err != nil || !slices.Contains(got, "pod-uid:"+uid) {
			t.Fatalf("got %q, %v", got, err)
		}
		if d := time.Since(start); d >= cfg.PollRetryInterval {
			t.Fatalf("took %v: waited for a retry instead of refetching", d)
		}
		// And a hit within the cache's life costs no request.
		before := f.kl.Served()
		if _, err := attest(t, a, f.pidA, f.pidfdA); err != nil {
			t.Fatal(err)
		}
		if f.kl.Served() != before {
			t.Fatal("a cached pod was fetched again")
		}
	})

	t.Run("BrokenKubelet", func(t *testing.T) {
		defer f.kl.SetFault(kubelet.NoFault)
		for _, tc := range []struct {
			fault kubelet.Fault
			want  string
		}{
			{kubelet.Garbage, "decode kubelet pod list"},
			{kubelet.ServerError, "unexpected status code on pods response: 500"},
			{kubelet.Hang, "context deadline exceeded"},
		} {
			f.kl.SetFault(tc.fault)
			a := newAttestor(t, f.secure())
			k8s.SetRequestTimeout(a, 300*time.Millisecond)
			start := time.Now()
			got, err := attest(t, a, f.pidA, f.pidfdA)
			if err == nil || !strings.Contains(err.Error(), tc.want) || len(got) != 0 {
				t.Errorf("fault %d: got %q, %v; want no selectors and an error with %q", tc.fault, got, err, tc.want)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("fault %d: took %v", tc.fault, d)
			}
		}
	})

	t.Run("NotInPod", func(t *testing.T) {
		before := f.kl.Served()
		self := os.Getpid()
		got, err := attest(t, newAttestor(t, f.secure()), self, pidfd(t, self))
		if err != nil || len(got) != 0 {
			t.Fatalf("got %q, %v; want no selectors and no error", got, err)
		}
		if f.kl.Served() != before {
			t.Fatal("the kubelet was asked about a process in no pod")
		}
	})

	t.Run("ExitedContainer", func(t *testing.T) {
		uid := kubelet.NewUID()
		st, c := kubelet.RunContainer(t, f.d, uid, "short", f.image, []string{"/sleeper", "-sleep"})
		f.kl.PutPod(kubelet.Pod{Name: "short", Namespace: "shop", UID: uid, Containers: []kubelet.Container{st}})
		defer f.kl.DeletePod(uid)
		fd := pidfd(t, c.PID)
		// Attested once while alive, so that the attestor knows its cgroup
		// and would answer a live caller in it without reading /proc.
		a := newAttestor(t, f.secure())
		if _, err := attest(t, a, c.PID, fd); err != nil {
			t.Fatal(err)
		}
		c.Stop(t)
		for _, a := range []*k8s.Attestor{a, newAttestor(t, f.secure())} {
			got, err := attest(t, a, c.PID, fd)
			if err == nil || len(got) != 0 {
				t.Fatalf("got %q, %v; want a refusal for a caller that has exited", got, err)
			}
		}
	})
}

func pool(ca *testpki.CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}
