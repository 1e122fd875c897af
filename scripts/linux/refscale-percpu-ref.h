/* SPDX-License-Identifier: GPL-2.0 */
/*
 * Two refscale scale types for percpu_ref, written for the refcnt project
 * (scripts/linux-refscale): Linux's refscale has none, and the project
 * compares its own percpu_ref with Linux's.
 *
 *   percpu_ref         a ref that starts in per-CPU mode (flags 0)
 *   percpu_ref-atomic  a ref that starts, and stays, in atomic mode
 *                      (PERCPU_REF_INIT_ATOMIC)
 *
 * The read section is percpu_ref_get() followed by percpu_ref_put() on the
 * one shared ref, by every reader, as our bench's rows do.
 *
 * scripts/linux-refscale copies this file beside refscale.c, includes it
 * just before refscale's init function (so that refscale's own types and
 * helpers are declared) and adds both ops to refscale's table of types.
 */

#include <linux/percpu-refcount.h>

static struct percpu_ref rs_pcpu_ref;

/* Never called: the ref is neither killed nor dropped to zero. */
static void rs_pcpu_ref_release(struct percpu_ref *ref)
{
}

static bool rs_pcpu_ref_start(unsigned int flags)
{
	return percpu_ref_init(&rs_pcpu_ref, rs_pcpu_ref_release, flags,
			       GFP_KERNEL) == 0;
}

static bool rs_pcpu_ref_init_percpu(void)
{
	return rs_pcpu_ref_start(0);
}

static bool rs_pcpu_ref_init_atomic(void)
{
	return rs_pcpu_ref_start(PERCPU_REF_INIT_ATOMIC);
}

static void rs_pcpu_ref_cleanup(void)
{
	percpu_ref_exit(&rs_pcpu_ref);
}

/* nloops + 1 pairs, as refscale's other sections count. */
static void rs_pcpu_ref_section(const int nloops)
{
	int n;

	for (n = 0; n <= nloops; n++) {
		percpu_ref_get(&rs_pcpu_ref);
		percpu_ref_put(&rs_pcpu_ref);
	}
}

static void rs_pcpu_ref_delay_section(const int nloops, const int udl,
				      const int ndl)
{
	int n;

	for (n = 0; n <= nloops; n++) {
		percpu_ref_get(&rs_pcpu_ref);
		un_delay(udl, ndl);
		percpu_ref_put(&rs_pcpu_ref);
	}
}

static const struct ref_scale_ops percpu_ref_ops = {
	.init		= rs_pcpu_ref_init_percpu,
	.cleanup	= rs_pcpu_ref_cleanup,
	.readsection	= rs_pcpu_ref_section,
	.delaysection	= rs_pcpu_ref_delay_section,
	.name		= "percpu_ref"
};

static const struct ref_scale_ops percpu_ref_atomic_ops = {
	.init		= rs_pcpu_ref_init_atomic,
	.cleanup	= rs_pcpu_ref_cleanup,
	.readsection	= rs_pcpu_ref_section,
	.delaysection	= rs_pcpu_ref_delay_section,
	.name		= "percpu_ref-atomic"
};
