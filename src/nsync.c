/* Small helpers on the shared context: node ids, peer lookup, the clock used
 * to stamp leases. */
#include "nsync.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <xxhash.h>

uint64_t nsync_node_id(const char *host, uint16_t cport)
{
    char addr[NSYNC_ADDR_MAX];
    int n = addr_format(addr, sizeof addr, host, cport);
    uint64_t id = XXH3_64bits(addr, (size_t)(n > 0 ? n : 0));
    return id ? id : 1; /* raft reserves id 0 */
}

const struct nsync_peer *nsync_peer_by_id(const struct nsync *ns, uint64_t id)
{
    for (size_t i = 0; i < ns->cfg.n_peers; i++)
        if (ns->cfg.peers[i].id == id)
            return &ns->cfg.peers[i];
    return NULL;
}

uint64_t nsync_now_ms(void)
{
    /* Wall clock, not monotonic: leases must mean the same after the
     * leadership moves to another machine. The FSM keeps it monotonic. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t nsync_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

uint64_t nsync_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void nsync_deadline(struct timespec *ts, uint64_t us)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(us / 1000000u);
    ts->tv_nsec += (long)(us % 1000000u) * 1000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int nsync_cond_init_mono(pthread_cond_t *cv)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(cv, &a);
    pthread_condattr_destroy(&a);
    return -rc;
}

void nsync_id_str(uint64_t id, char out[NSYNC_ID_STRLEN])
{
    snprintf(out, NSYNC_ID_STRLEN, "%016" PRIx64, id);
}

int nsync_id_parse(const char *s, uint64_t *id)
{
    if (!s || strlen(s) != 16)
        return -EINVAL;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char ch = s[i];
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            d = (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            d = (unsigned)(ch - 'A' + 10);
        else
            return -EINVAL;
        v = v << 4 | d;
    }
    *id = v;
    return 0;
}
