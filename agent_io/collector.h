/* agent_io/collector.h — the shim's two background threads: the collector
 * (drains sample records from the sample ring into the aggregation table) and
 * the uploader (every upload period and at exit: swaps the table out and hands
 * it to libddshim-agent.so to symbolize, build and deliver). Both block every
 * signal. Started by the constructor, restarted in a fork child. */
#ifndef DDSHIM_COLLECTOR_H
#define DDSHIM_COLLECTOR_H

#include "preload/config.h"

/* Map the sample ring and set up the state; 0 or -1. */
int collector_init(const struct shim_config *cfg);
/* Start the threads. 0 or -1. */
int collector_start(void);
/* Deliver what is aggregated now, waiting at most timeout_ms; further samples
 * are not delivered after a final flush (process exit). */
void collector_final_flush(long timeout_ms);
/* In a fork child (single-threaded): emptied ring, fresh tables, runtime-id,
 * threads. 0 or -1. */
int collector_after_fork_child(void);
/* Stop the two threads (joined) so the process is single-threaded again for a
 * host's unshare(CLONE_NEWUSER)/setns(); 1 when stopped, 0 when none ran, -1
 * when they did not stop within timeout_ms. */
int collector_pause(long timeout_ms);
/* Start them again after collector_pause. */
void collector_resume(void);
/* True when there is anything a flush would deliver. */
int collector_has_data(void);

#endif
