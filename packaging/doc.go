// Package packaging holds what `make dist` ships besides the binaries:
// the configuration templates, the systemd units and the Debian control
// files, and the test that builds, installs and upgrades the package.
package packaging
