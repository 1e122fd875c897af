// SPDX-License-Identifier: GPL-2.0
/*
 * gp_latency: Linux's grace-period and percpu_ref shutdown latencies, timed
 * the way the refcnt project's kernel times its own (kernel/src/bench,
 * latencies()), so that `scripts/bench --linux` can put them side by side.
 * Written for that project; scripts/linux-refscale builds it out of tree
 * and loads it in the same QEMU guest as refscale.
 *
 * Loading the module runs everything and then returns; the figures are in
 * the kernel log, one line per row:
 *
 *   gp-latency: <what>, <setting> | samples=N | p50_ns=A | p99_ns=B | max_ns=C
 *
 * <setting> is "idle" or "readers on every CPU". The percentiles are taken
 * as ours are: sort the samples, p50 is sample[N * 50 / 100], p99 is
 * sample[N * 99 / 100], max the last one.
 *
 * What is timed, from the timing thread (a kthread on CPU 0), with
 * ktime_get_ns() before and after:
 *   synchronize_rcu(), synchronize_rcu_expedited(),
 *   synchronize_srcu(), synchronize_srcu_expedited() on a domain of ours,
 *   percpu_ref_switch_to_atomic_sync() then percpu_ref_switch_to_percpu()
 *     (ours times the same round trip),
 *   percpu_ref_kill() until the waiter wakes from the release callback's
 *     complete(),
 *   percpu_ref_kill_and_confirm() until the confirm callback runs (stamped
 *     in the callback) and until the waiter wakes after the release.
 * The kill rows take `kill_samples` samples (ours takes a tenth of its
 * sample count there), the others `samples`. After a release the ref is
 * brought back with percpu_ref_reinit(), outside the timed span.
 *
 * With readers: one kthread on every other CPU loops through an RCU read
 * section, a read section of our SRCU domain and a tryget_live + put of
 * the ref under test, yielding (cond_resched()) every 256 rounds.
 */

#include <linux/completion.h>
#include <linux/cpumask.h>
#include <linux/kthread.h>
#include <linux/ktime.h>
#include <linux/module.h>
#include <linux/percpu-refcount.h>
#include <linux/rcupdate.h>
#include <linux/sched.h>
#include <linux/slab.h>
#include <linux/sort.h>
#include <linux/srcu.h>

static int samples = 200;
module_param(samples, int, 0444);
MODULE_PARM_DESC(samples, "samples per grace-period and switch row (default 200)");

static int kill_samples = 20;
module_param(kill_samples, int, 0444);
MODULE_PARM_DESC(kill_samples, "samples per kill row (default 20)");

static struct srcu_struct gpl_srcu;
static struct percpu_ref gpl_ref;
static DECLARE_COMPLETION(gpl_released);
static DECLARE_COMPLETION(gpl_finished);
static u64 gpl_confirmed_at;
static struct task_struct **gpl_readers;
static int gpl_status;

static void gpl_release(struct percpu_ref *ref)
{
	complete(&gpl_released);
}

static void gpl_confirm(struct percpu_ref *ref)
{
	WRITE_ONCE(gpl_confirmed_at, ktime_get_ns());
}

static int gpl_cmp(const void *a, const void *b)
{
	u64 x = *(const u64 *)a, y = *(const u64 *)b;

	return x < y ? -1 : x > y;
}

static void gpl_report(const char *what, const char *setting, u64 *ns, int n)
{
	sort(ns, n, sizeof(*ns), gpl_cmp, NULL);
	pr_info("gp-latency: %s, %s | samples=%d | p50_ns=%llu | p99_ns=%llu | max_ns=%llu\n",
		what, setting, n, ns[n * 50 / 100], ns[min(n * 99 / 100, n - 1)],
		ns[n - 1]);
}

enum gpl_op {
	GPL_SYNC_RCU,
	GPL_SYNC_RCU_EXP,
	GPL_SYNC_SRCU,
	GPL_SYNC_SRCU_EXP,
	GPL_SWITCH,
};

static const char *const gpl_op_names[] = {
	[GPL_SYNC_RCU] = "synchronize_rcu",
	[GPL_SYNC_RCU_EXP] = "synchronize_rcu_expedited",
	[GPL_SYNC_SRCU] = "synchronize_srcu",
	[GPL_SYNC_SRCU_EXP] = "synchronize_srcu_expedited",
	[GPL_SWITCH] = "percpu_ref_switch_to_atomic_sync",
};

static void gpl_do(enum gpl_op op)
{
	switch (op) {
	case GPL_SYNC_RCU:
		synchronize_rcu();
		break;
	case GPL_SYNC_RCU_EXP:
		synchronize_rcu_expedited();
		break;
	case GPL_SYNC_SRCU:
		synchronize_srcu(&gpl_srcu);
		break;
	case GPL_SYNC_SRCU_EXP:
		synchronize_srcu_expedited(&gpl_srcu);
		break;
	case GPL_SWITCH:
		percpu_ref_switch_to_atomic_sync(&gpl_ref);
		percpu_ref_switch_to_percpu(&gpl_ref);
		break;
	}
}

/* One setting: every row, in the order of our latency table. */
static void gpl_measure(const char *setting, u64 *buf, u64 *buf2)
{
	enum gpl_op op;
	int i;

	for (op = GPL_SYNC_RCU; op <= GPL_SWITCH; op++) {
		for (i = 0; i < samples; i++) {
			u64 t0 = ktime_get_ns();

			gpl_do(op);
			buf[i] = ktime_get_ns() - t0;
		}
		gpl_report(gpl_op_names[op], setting, buf, samples);
	}

	for (i = 0; i < kill_samples; i++) {
		u64 t0;

		reinit_completion(&gpl_released);
		t0 = ktime_get_ns();
		percpu_ref_kill(&gpl_ref);
		wait_for_completion(&gpl_released);
		buf[i] = ktime_get_ns() - t0;
		percpu_ref_reinit(&gpl_ref);
	}
	gpl_report("percpu_ref_kill -> release", setting, buf, kill_samples);

	for (i = 0; i < kill_samples; i++) {
		u64 t0;

		reinit_completion(&gpl_released);
		WRITE_ONCE(gpl_confirmed_at, 0);
		t0 = ktime_get_ns();
		percpu_ref_kill_and_confirm(&gpl_ref, gpl_confirm);
		wait_for_completion(&gpl_released);
		buf[i] = ktime_get_ns() - t0;
		/* The confirmation comes before the release drops the last ref. */
		buf2[i] = READ_ONCE(gpl_confirmed_at) - t0;
		percpu_ref_reinit(&gpl_ref);
	}
	gpl_report("percpu_ref_kill_and_confirm -> confirm", setting, buf2, kill_samples);
	gpl_report("percpu_ref_kill_and_confirm -> release", setting, buf, kill_samples);
}

static int gpl_reader(void *unused)
{
	unsigned int round = 0;
	int idx;

	while (!kthread_should_stop()) {
		rcu_read_lock();
		rcu_read_unlock();
		idx = srcu_read_lock(&gpl_srcu);
		srcu_read_unlock(&gpl_srcu, idx);
		if (percpu_ref_tryget_live(&gpl_ref))
			percpu_ref_put(&gpl_ref);
		if (++round % 256 == 0)
			cond_resched();
	}
	return 0;
}

static void gpl_stop_readers(void)
{
	int cpu;

	for_each_possible_cpu(cpu) {
		if (gpl_readers[cpu])
			kthread_stop(gpl_readers[cpu]);
		gpl_readers[cpu] = NULL;
	}
}

static int gpl_start_readers(int timer_cpu)
{
	struct task_struct *t;
	int cpu;

	for_each_online_cpu(cpu) {
		if (cpu == timer_cpu)
			continue;
		t = kthread_create(gpl_reader, NULL, "gp_latency_rd/%d", cpu);
		if (IS_ERR(t)) {
			gpl_stop_readers();
			return PTR_ERR(t);
		}
		kthread_bind(t, cpu);
		gpl_readers[cpu] = t;
		wake_up_process(t);
	}
	return 0;
}

static int gpl_timer(void *unused)
{
	int n = max(samples, kill_samples);
	u64 *buf = kcalloc(n, sizeof(u64), GFP_KERNEL);
	u64 *buf2 = kcalloc(n, sizeof(u64), GFP_KERNEL);

	if (!buf || !buf2) {
		gpl_status = -ENOMEM;
		goto out;
	}
	pr_info("gp-latency: start: %d samples, %d per kill row, %d CPUs, timing on CPU %d\n",
		samples, kill_samples, num_online_cpus(), raw_smp_processor_id());
	gpl_measure("idle", buf, buf2);
	gpl_status = gpl_start_readers(raw_smp_processor_id());
	if (gpl_status)
		goto out;
	gpl_measure("readers on every CPU", buf, buf2);
	gpl_stop_readers();
	pr_info("gp-latency: done\n");
out:
	kfree(buf);
	kfree(buf2);
	complete(&gpl_finished);
	return 0;
}

static int __init gpl_init(void)
{
	struct task_struct *t;
	int err;

	if (samples < 1 || kill_samples < 1)
		return -EINVAL;
	gpl_readers = kcalloc(nr_cpu_ids, sizeof(*gpl_readers), GFP_KERNEL);
	if (!gpl_readers)
		return -ENOMEM;
	err = init_srcu_struct(&gpl_srcu);
	if (err)
		goto free_readers;
	/* ALLOW_REINIT keeps the per-CPU counters across kill and reinit. */
	err = percpu_ref_init(&gpl_ref, gpl_release, PERCPU_REF_ALLOW_REINIT, GFP_KERNEL);
	if (err)
		goto cleanup_srcu;
	t = kthread_create(gpl_timer, NULL, "gp_latency");
	if (IS_ERR(t)) {
		err = PTR_ERR(t);
		goto exit_ref;
	}
	kthread_bind(t, cpumask_first(cpu_online_mask));
	wake_up_process(t);
	/*
	 * Interruptible so that a run of minutes does not count as a hung
	 * task; nothing here sends signals, and the timer thread needs this
	 * module until it completes.
	 */
	while (wait_for_completion_interruptible(&gpl_finished))
		;
	err = gpl_status;
	if (!err)
		return 0;
exit_ref:
	percpu_ref_exit(&gpl_ref);
cleanup_srcu:
	cleanup_srcu_struct(&gpl_srcu);
free_readers:
	kfree(gpl_readers);
	return err;
}

static void __exit gpl_exit(void)
{
	/* Callbacks of our ref (release, confirm) are ours: let them finish. */
	rcu_barrier();
	percpu_ref_exit(&gpl_ref);
	cleanup_srcu_struct(&gpl_srcu);
	kfree(gpl_readers);
}

module_init(gpl_init);
module_exit(gpl_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Grace-period and percpu_ref kill latencies, for the refcnt project's bench");
