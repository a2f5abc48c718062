# Shared plumbing of the demo scripts (sourced, not run): a work directory,
# processes stopped in reverse start order on exit, and polling helpers.
# The sourcing script sets work (a directory it owns) before sourcing.
pids=()

# cleanup stops what was started, newest first (the agent before the server
# before any simulator they talk to), and removes the work directory.
cleanup() {
	for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
		kill "${pids[i]}" 2>/dev/null || true
		wait "${pids[i]}" 2>/dev/null || true
	done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

# wait_for DESCRIPTION COMMAND... polls every 0.1 s, WAIT_TRIES times.
wait_for() {
	local what=$1; shift
	for _ in $(seq 1 "${WAIT_TRIES:-100}"); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "timed out waiting for $what" >&2
	return 1
}
