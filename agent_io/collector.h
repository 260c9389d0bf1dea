/* agent_io/collector.h — the shim's two background threads: the collector
 * (drains sample and span records from the rings into the aggregation tables)
 * and the uploader (every upload period and at exit: swaps the table out and
 * hands it to libddshim-agent.so to symbolize, build and deliver). Both block
 * every signal. The collector is started by the constructor and again in a
 * fork child; the uploader only once there is something to deliver. */
#ifndef DDSHIM_COLLECTOR_H
#define DDSHIM_COLLECTOR_H

#include "preload/config.h"

/* Map the sample ring and set up the state; 0 or -1. */
int collector_init(const struct shim_config *cfg);
/* Start the collector thread (the uploader follows when needed). 0 or -1. */
int collector_start(void);
/* Deliver what has been collected, waiting at most timeout_ms; further samples
 * are not delivered after a final flush (process exit). Returns at once,
 * starting no thread, when there is nothing to deliver. */
void collector_final_flush(long timeout_ms);
/* In a fork child (single-threaded): emptied rings, fresh state (tables and
 * runtime-id are made when first needed). The caller then starts the
 * collector with collector_start, once nothing else resets the rings. 0. */
int collector_after_fork_child(void);
/* Around a host's fork (the forking thread, before and in the parent after):
 * the collector is kept out of its locked section, where it may create the
 * uploader thread (which allocates), so the child never inherits an
 * allocator lock taken by it. Waits at most 20 ms. */
void collector_fork_prepare(void);
void collector_fork_parent(void);
/* Stop the threads that run (joined) so the process is single-threaded again
 * for a host's unshare(CLONE_NEWUSER)/setns(); 1 when stopped, 0 when none
 * ran, -1 when they did not stop within timeout_ms. */
int collector_pause(long timeout_ms);
/* Start the collector again after collector_pause. */
void collector_resume(void);
/* How many of the shim's threads exist; none starts until
 * collector_threads_release() (for counting the host's threads). */
int collector_threads_hold(void);
void collector_threads_release(void);

#endif
