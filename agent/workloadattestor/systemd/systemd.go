// Package systemd is SPIRE's "systemd" workload attestor: it names the
// systemd unit a caller runs in, as systemd:id:<unit> and
// systemd:fragment_path:<unit file>.
//
// The unit comes from the caller's cgroup, read through a /proc/<pid>
// handle confirmed with the caller's pidfd (containerinfo.ReadCgroups), so
// a caller that exited and whose PID was reused is refused; no question
// about a PID is ever put to systemd. Where systemd runs, the unit is then
// looked up by name on its D-Bus interface (org.freedesktop.systemd1 on
// the system bus, as SPIRE does) for its Id and FragmentPath, and a cgroup
// named like a unit that systemd has not loaded is refused. Where systemd
// does not run (a container, an init without it) the attestor says so once
// at start-up and emits systemd:id alone, from the cgroup name.
package systemd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/spiffe-hw/spire-hw/agent/workloadattestor/containerinfo"
	"github.com/spiffe/spire-api-sdk/proto/spire/api/types"
)

// SelectorType is the type of every selector this attestor emits.
const SelectorType = "systemd"

// callTimeout bounds a D-Bus exchange (connecting, or one call) when the
// caller's context allows longer: a systemd that hangs must not hold the
// Workload API call for ever.
const callTimeout = 5 * time.Second

// Config configures the attestor. SPIRE's systemd attestor has no
// plugin_data; these fields are for the agent's wiring and tests.
type Config struct {
	// BusAddress is the D-Bus address of the systemd manager to ask
	// ("unix:path=/run/user/0/bus" for a user manager). Empty: the system
	// bus, if systemd is the init system here (Booted); without it, no
	// bus is asked.
	BusAddress string
	// Log receives the one line saying that systemd does not run here.
	Log *slog.Logger
}

// Attestor is the systemd workload attestor.
type Attestor struct {
	procDir string
	// bus is nil where systemd does not run: systemd:id only.
	bus *manager
}

// Booted reports whether systemd is the init system here, as sd_booted(3)
// decides it: /run/systemd/system is a directory.
func Booted() bool {
	fi, err := os.Lstat("/run/systemd/system")
	return err == nil && fi.IsDir()
}

// New returns an Attestor. It does not connect: the bus is dialled on the
// first call, and again whenever the connection drops.
func New(cfg Config) *Attestor {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &Attestor{procDir: "/proc"}
	switch {
	case cfg.BusAddress != "":
		a.bus = &manager{address: cfg.BusAddress}
	case Booted():
		a.bus = &manager{}
	default:
		log.Warn("systemd: systemd is not running here (no /run/systemd/system); " +
			"the unit is named from the caller's cgroup alone: systemd:id selectors only, no systemd:fragment_path")
	}
	return a
}

// Attest returns the selectors for pid. pidfd must refer to the same
// process (pass -1 only where no pidfd exists; the PID-reuse check is then
// skipped).
func (a *Attestor) Attest(ctx context.Context, pid int32, pidfd int) ([]*types.Selector, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("systemd: %w", err)
	}
	cgs, err := containerinfo.ReadCgroups(a.procDir, pid, pidfd)
	if err != nil {
		return nil, fmt.Errorf("systemd: %w", err)
	}
	path, err := systemdPath(cgs)
	if err != nil {
		return nil, fmt.Errorf("systemd: pid %d: %w", pid, err)
	}
	unit, slice, err := unitFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("systemd: pid %d: %w", pid, err)
	}
	if a.bus == nil {
		// Without systemd a process in a slice (or in "/", where every
		// process of a host without systemd is) is in no unit at all.
		if slice {
			return nil, fmt.Errorf("systemd: pid %d: cgroup %q is in no systemd unit", pid, path)
		}
		return []*types.Selector{{Type: SelectorType, Value: "id:" + unit}}, nil
	}
	id, fragment, err := a.bus.unit(ctx, unit)
	if err != nil {
		return nil, fmt.Errorf("systemd: pid %d in cgroup %q: %w", pid, path, err)
	}
	return []*types.Selector{
		{Type: SelectorType, Value: "id:" + id},
		{Type: SelectorType, Value: "fragment_path:" + fragment},
	}, nil
}

// Close closes the D-Bus connection, if one was made.
func (a *Attestor) Close() error {
	if a.bus == nil {
		return nil
	}
	return a.bus.close()
}

// D-Bus names of systemd's manager (org.freedesktop.systemd1(5)).
const (
	busName       = "org.freedesktop.systemd1"
	managerPath   = dbus.ObjectPath("/org/freedesktop/systemd1")
	getUnit       = "org.freedesktop.systemd1.Manager.GetUnit"
	unitInterface = "org.freedesktop.systemd1.Unit"
	propertiesGet = "org.freedesktop.DBus.Properties.Get"
	errNoSuchUnit = "org.freedesktop.systemd1.NoSuchUnit"
)

// manager is a connection to a systemd manager on D-Bus.
type manager struct {
	address string // "": the system bus

	mu   sync.Mutex
	conn *dbus.Conn
}

// ErrNotLoaded is wrapped by the error for a caller whose cgroup names a
// unit systemd has not loaded: the cgroup was made by someone else.
var ErrNotLoaded = errors.New("systemd: unit not loaded in systemd")

// unit returns the Id and FragmentPath of the loaded unit name.
func (m *manager) unit(ctx context.Context, name string) (id, fragment string, err error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	conn, err := m.connect(ctx)
	if err != nil {
		return "", "", err
	}
	var path dbus.ObjectPath
	if err := conn.Object(busName, managerPath).CallWithContext(ctx, getUnit, 0, name).Store(&path); err != nil {
		var de dbus.Error
		if errors.As(err, &de) && de.Name == errNoSuchUnit {
			return "", "", fmt.Errorf("%w: %q (%v)", ErrNotLoaded, name, err)
		}
		return "", "", fmt.Errorf("systemd: GetUnit(%q): %w", name, err)
	}
	obj := conn.Object(busName, path)
	if id, err = stringProperty(ctx, obj, "Id"); err != nil {
		return "", "", err
	}
	// systemd names a unit's cgroup by the unit's Id, never by an alias,
	// so a cgroup that resolves to another Id was not made for this unit.
	if id != name {
		return "", "", fmt.Errorf("%w: cgroup %q names an alias of %q", ErrNotLoaded, name, id)
	}
	if fragment, err = stringProperty(ctx, obj, "FragmentPath"); err != nil {
		return "", "", err
	}
	return id, fragment, nil
}

func stringProperty(ctx context.Context, obj dbus.BusObject, prop string) (string, error) {
	var v dbus.Variant
	if err := obj.CallWithContext(ctx, propertiesGet, 0, unitInterface, prop).Store(&v); err != nil {
		return "", fmt.Errorf("systemd: get %s of %s: %w", prop, obj.Path(), err)
	}
	s, ok := v.Value().(string)
	if !ok {
		return "", fmt.Errorf("systemd: %s of %s is %s, not a string", prop, obj.Path(), v.Signature())
	}
	return s, nil
}

// connect returns the connection, dialling it if there is none or it
// dropped. The handshake is bounded by ctx: godbus's own has no deadline.
func (m *manager) connect(ctx context.Context) (*dbus.Conn, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn != nil && m.conn.Connected() {
		return m.conn, nil
	}
	var (
		conn *dbus.Conn
		err  error
	)
	if m.address == "" {
		conn, err = dbus.SystemBusPrivate()
	} else {
		conn, err = dbus.Dial(m.address)
	}
	if err != nil {
		return nil, fmt.Errorf("systemd: connect to D-Bus: %w", err)
	}
	done := make(chan error, 1)
	go func() {
		err := conn.Auth(nil)
		if err == nil {
			err = conn.Hello()
		}
		done <- err
	}()
	select {
	case err = <-done:
	case <-ctx.Done():
		// Closing the socket ends the handshake's blocked read.
		_ = conn.Close()
		<-done
		err = ctx.Err()
	}
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("systemd: D-Bus handshake: %w", err)
	}
	m.conn = conn
	return conn, nil
}

func (m *manager) close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.conn == nil {
		return nil
	}
	err := m.conn.Close()
	m.conn = nil
	return err
}
