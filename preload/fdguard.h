/* preload/fdguard.h — descriptors the host must not close or reuse: the
 * shim's sample channel and terminate pipe, and libunwind's memory-validation
 * pipe (libunwind reads and writes it from the signal handler: were the host to
 * close it and reopen the number, libunwind would read the host's bytes and
 * write bytes of memory into the host's file). They are moved to high numbers
 * (away from where a host's next open lands) and the close hooks skip them.
 * All functions are async-signal-safe (libunwind re-creates its pipe from
 * inside the sampling handler). */
#ifndef DDSHIM_FDGUARD_H
#define DDSHIM_FDGUARD_H

/* Move fd to a high number (close-on-exec), guard it, return the new number;
 * on failure guard fd where it is and return it. */
int fdguard_take(int fd);
/* Stop guarding fd (the shim closes it itself). */
void fdguard_release(int fd);
int fdguard_is(int fd);
/* Count of guarded fds in [first, last]. */
int fdguard_in_range(unsigned first, unsigned last);

#endif
