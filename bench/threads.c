/* bench/threads.c — N threads that start and then sleep for S seconds (the
 * footprint section's "many threads" case: what the shim adds per thread, its
 * timer and per-thread unwind state, shows in RSS). Usage: threads N S */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

static unsigned secs;

static void *sleeper(void *arg)
{
    (void)arg;
    sleep(secs);
    return NULL;
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 100;
    secs = argc > 2 ? (unsigned)atoi(argv[2]) : 3;
    pthread_t *t = calloc((size_t)n, sizeof *t);
    if (!t)
        return 1;
    int made = 0;
    for (int i = 0; i < n; i++)
        if (pthread_create(&t[made], NULL, sleeper, NULL) == 0)
            made++;
    for (int i = 0; i < made; i++)
        pthread_join(t[i], NULL);
    free(t);
    return made == n ? 0 : 1;
}
