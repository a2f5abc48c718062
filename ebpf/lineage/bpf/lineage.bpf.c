// SPDX-License-Identifier: GPL-2.0 OR BSD-2-Clause
/*
 * Process lineage tracer. Reports every new process (fork), every program
 * change (exec), every cgroup change of a thread-group leader and every
 * thread-group exit to user space through one ring buffer, so that
 * user space can keep a table of live processes keyed by their pidfs inode.
 *
 * Events are small fixed records; only exec carries a path, appended after
 * the record with its exact length. User space is woken only when enough
 * bytes are waiting (wakeup_bytes); it polls on a timer and flushes on demand
 * for the rest, so a fork storm does not cost a wakeup per event.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_KTHREAD 0x00200000
#define PATH_MAX_LEN 4096
#define NAME_MAX_LEN 255
/* Components (and mount crossings) walked to build a path. */
#define PATH_DEPTH 64

enum event_type {
	EVENT_FORK = 1,
	EVENT_EXEC = 2,
	EVENT_EXIT = 3,
	EVENT_CGROUP = 5,
};

enum event_flags {
	/* The executable's dentry was unhashed: d_path appends " (deleted)". */
	FLAG_EXE_UNHASHED = 1 << 0,
	/* The executable has no place in any directory tree (memfd, anonymous). */
	FLAG_EXE_PSEUDO = 1 << 1,
	/* The path did not fit PATH_MAX_LEN or PATH_DEPTH components. */
	FLAG_PATH_TRUNCATED = 1 << 2,
	/* The task had no mm or no executable file. */
	FLAG_NO_EXE = 1 << 3,
	/* The executable's inode had no links left. */
	FLAG_EXE_NOLINK = 1 << 4,
};

struct event {
	__u32 type;
	__u32 flags;
	__u32 tgid;
	__u32 ptgid;
	__u64 ino;	 /* pidfs inode of the thread-group leader's struct pid */
	__u64 pino;	 /* same, of the parent's thread-group leader */
	__u64 start_ns;	 /* start_boottime of the leader */
	__u64 pstart_ns; /* start_boottime of the parent's leader */
	__u64 cgroup_id; /* cgroup v2 id (the cgroup directory's inode) */
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 egid;
	__u64 exe_dev; /* kernel dev_t: major << 20 | minor */
	__u64 exe_ino;
	__s64 exe_ctime_sec;
	__u32 exe_ctime_nsec;
	__u32 path_len; /* bytes of path after the record (exec only) */
	__s64 exe_size;
	char comm[16];
};

/* Exec events are built here: the record, the path copied right after it,
 * and a work area in which the path is assembled from its last component. */
struct scratch {
	struct event ev;
	char out[PATH_MAX_LEN];
	char work[2 * PATH_MAX_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct scratch);
} scratch_map SEC(".maps");

/* User space is woken once this many bytes wait in the ring. */
volatile const __u64 wakeup_bytes = 256 << 10;

static __always_inline __u64 wake_flags(void)
{
	return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* Records committed to the ring, and records lost because it was full.
 * Both live in .bss, which user space maps: it reads them without a system
 * call. While emitted exceeds the records user space has applied, an event
 * such as the caller's own exec may still wait in the ring, and a lookup
 * must drain the ring first. Any drop means the table may be wrong. */
__u64 emitted = 0;
__u64 dropped = 0;

static __always_inline void emit(void *data, __u64 size)
{
	if (bpf_ringbuf_output(&events, data, size, wake_flags()) != 0)
		__sync_fetch_and_add(&dropped, 1);
	else
		__sync_fetch_and_add(&emitted, 1);
}

static __always_inline __u64 pidfs_ino(struct task_struct *leader)
{
	if (!bpf_core_field_exists(struct pid, ino))
		return 0;
	return BPF_CORE_READ(leader, thread_pid, ino);
}

/* fill_task records who the process is: key, parent key, credentials,
 * cgroup and comm. Credentials can change later (setuid) without an event:
 * user space reads the live ones through the caller's pidfd. */
static __always_inline void fill_task(struct event *ev, struct task_struct *task)
{
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	struct task_struct *parent = BPF_CORE_READ(leader, real_parent, group_leader);
	const struct cred *cred = BPF_CORE_READ(leader, real_cred);

	ev->tgid = BPF_CORE_READ(leader, tgid);
	ev->ino = pidfs_ino(leader);
	ev->start_ns = BPF_CORE_READ(leader, start_boottime);
	ev->ptgid = BPF_CORE_READ(parent, tgid);
	ev->pino = pidfs_ino(parent);
	ev->pstart_ns = BPF_CORE_READ(parent, start_boottime);
	ev->uid = BPF_CORE_READ(cred, uid.val);
	ev->gid = BPF_CORE_READ(cred, gid.val);
	ev->euid = BPF_CORE_READ(cred, euid.val);
	ev->egid = BPF_CORE_READ(cred, egid.val);
	ev->cgroup_id = BPF_CORE_READ(leader, cgroups, dfl_cgrp, kn, id);
	BPF_CORE_READ_STR_INTO(&ev->comm, leader, comm);
}

static __always_inline void fill_inode(struct event *ev, struct inode *inode)
{
	ev->exe_dev = BPF_CORE_READ(inode, i_sb, s_dev);
	ev->exe_ino = BPF_CORE_READ(inode, i_ino);
	ev->exe_size = BPF_CORE_READ(inode, i_size);
	if (bpf_core_field_exists(inode->i_ctime_sec)) {
		ev->exe_ctime_sec = BPF_CORE_READ(inode, i_ctime_sec);
		/* Bit 31 marks a multigrain timestamp as queried; stat masks it. */
		ev->exe_ctime_nsec = BPF_CORE_READ(inode, i_ctime_nsec) & ((1u << 30) - 1);
	} else {
		struct inode___timespec *old = (void *)inode;
		if (bpf_core_field_exists(old->__i_ctime)) {
			ev->exe_ctime_sec = BPF_CORE_READ(old, __i_ctime.tv_sec);
			ev->exe_ctime_nsec = BPF_CORE_READ(old, __i_ctime.tv_nsec);
		}
	}
	if (BPF_CORE_READ(inode, __i_nlink) == 0)
		ev->flags |= FLAG_EXE_NOLINK;
}

/* path_walk is the state of build_path between steps. */
struct path_walk {
	struct scratch *s;
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	__u32 off;
};

/* path_step prepends one component, or climbs from a mount's root to its
 * mount point. It returns 1 to stop. Run through bpf_loop, it is verified
 * once rather than once per component. */
static long path_step(__u32 i, void *arg)
{
	struct path_walk *w = arg;
	/* Copied out: a field of w named inside BPF_CORE_READ would be
	 * relocated as if it were a kernel type. */
	struct scratch *s = w->s;
	struct dentry *dentry = w->dentry;
	struct vfsmount *vfsmnt = w->vfsmnt;
	struct mount *mnt = w->mnt;

	if (dentry == BPF_CORE_READ(vfsmnt, mnt_root)) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
		if (up == mnt)
			return 1; /* the root of the mount tree */
		w->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		w->mnt = up;
		w->vfsmnt = (void *)up + bpf_core_field_offset(struct mount, mnt);
		return 0;
	}
	__u32 len = BPF_CORE_READ(dentry, d_name.len);
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	__u32 off = w->off;
	if (len > NAME_MAX_LEN || off <= len + 1) {
		s->ev.flags |= FLAG_PATH_TRUNCATED;
		return 1;
	}
	off -= len;
	bpf_probe_read_kernel(&s->work[off & (PATH_MAX_LEN - 1)], len & NAME_MAX_LEN, name);
	off -= 1;
	s->work[off & (PATH_MAX_LEN - 1)] = '/';
	w->off = off;

	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	if (parent == dentry) {
		/* A root that is not a mount's root: a pseudo file. */
		s->ev.flags |= FLAG_EXE_PSEUDO;
		return 1;
	}
	w->dentry = parent;
	return 0;
}

/* build_path assembles the path of file, as d_path would for a reader at the
 * root of the task's mount tree, at the end of s->work and copies it to
 * s->out. It returns the length. */
static __always_inline __u32 build_path(struct scratch *s, struct file *file)
{
	struct dentry *dentry = BPF_CORE_READ(file, f_path.dentry);
	struct vfsmount *vfsmnt = BPF_CORE_READ(file, f_path.mnt);
	struct path_walk w = {
		.s = s,
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		/* container_of, with the offset relocated against the kernel's BTF. */
		.mnt = (void *)vfsmnt - bpf_core_field_offset(struct mount, mnt),
		.off = PATH_MAX_LEN,
	};

	/* d_unlinked(): unhashed, and not a root of its own. */
	if (BPF_CORE_READ(dentry, d_hash.pprev) == 0 && BPF_CORE_READ(dentry, d_parent) != dentry)
		s->ev.flags |= FLAG_EXE_UNHASHED;

	if (bpf_loop(PATH_DEPTH, path_step, &w, 0) == PATH_DEPTH)
		s->ev.flags |= FLAG_PATH_TRUNCATED;

	__u32 off = w.off;
	if (off >= PATH_MAX_LEN) {
		off = PATH_MAX_LEN - 1;
		s->work[off] = '/';
	}
	__u32 n = (PATH_MAX_LEN - off) & (PATH_MAX_LEN - 1);
	bpf_probe_read_kernel(s->out, n, &s->work[off & (PATH_MAX_LEN - 1)]);
	return n;
}

static __always_inline struct scratch *get_scratch(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch_map, &zero);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(on_fork, struct task_struct *parent, struct task_struct *child)
{
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0; /* a new thread, not a new process */
	if (BPF_CORE_READ(child, flags) & PF_KTHREAD)
		return 0;
	struct event ev = {};
	ev.type = EVENT_FORK;
	fill_task(&ev, child);
	emit(&ev, sizeof(ev));
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(on_exec, struct task_struct *task, pid_t old_pid, struct linux_binprm *bprm)
{
	struct scratch *s = get_scratch();
	if (!s)
		return 0;
	__builtin_memset(&s->ev, 0, sizeof(s->ev));
	s->ev.type = EVENT_EXEC;
	fill_task(&s->ev, task);
	struct file *file = BPF_CORE_READ(task, mm, exe_file);
	if (!file) {
		s->ev.flags |= FLAG_NO_EXE;
		emit(&s->ev, sizeof(s->ev));
		return 0;
	}
	fill_inode(&s->ev, BPF_CORE_READ(file, f_inode));
	__u32 n = build_path(s, file);
	s->ev.path_len = n;
	emit(&s->ev, sizeof(s->ev) + (n & (PATH_MAX_LEN - 1)));
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(on_exit, struct task_struct *task)
{
	/* Only the last thread of a group reports: signal->live reached 0
	 * before this tracepoint on every kernel with BTF tracepoints. */
	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	if (BPF_CORE_READ(task, flags) & PF_KTHREAD)
		return 0;
	struct event ev = {};
	ev.type = EVENT_EXIT;
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	ev.tgid = BPF_CORE_READ(leader, tgid);
	ev.ino = pidfs_ino(leader);
	ev.start_ns = BPF_CORE_READ(leader, start_boottime);
	emit(&ev, sizeof(ev));
	return 0;
}

SEC("tp_btf/cgroup_attach_task")
int BPF_PROG(on_cgroup, struct cgroup *dst, const char *path, struct task_struct *task, bool threadgroup)
{
	if (BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return 0;
	struct event ev = {};
	ev.type = EVENT_CGROUP;
	fill_task(&ev, task);
	emit(&ev, sizeof(ev));
	return 0;
}
