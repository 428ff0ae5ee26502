/* Reading the leader's batch answer (answer.h) without trusting it: every
 * element's shape and range is checked before a field is used. */
#include "cluster/answer.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cluster/cluster.h"
#include "nsync.h"

/* A u64 sent as a decimal string (the server's format) or, leniently, as a
 * number small enough to be exact in a double. */
static int answer_u64(const cJSON *it, uint64_t *out)
{
    if (cJSON_IsString(it) && it->valuestring && *it->valuestring) {
        const char *s = it->valuestring;
        uint64_t v = 0;
        for (; *s; s++) {
            if (*s < '0' || *s > '9')
                return -EPROTO;
            unsigned d = (unsigned)(*s - '0');
            if (v > (UINT64_MAX - d) / 10)
                return -EPROTO;
            v = v * 10 + d;
        }
        *out = v;
        return 0;
    }
    if (cJSON_IsNumber(it) && it->valuedouble >= 0 && it->valuedouble < 9007199254740992.0) {
        *out = (uint64_t)it->valuedouble;
        return 0;
    }
    return -EPROTO;
}

/* One element of a batch answer: [rc, status, "version", "lock_holder",
 * "path_version"]. */
static int answer_one(const cJSON *r, struct cluster_item *it)
{
    uint64_t v[3];
    if (!cJSON_IsArray(r) || cJSON_GetArraySize(r) != 5)
        return -EPROTO;
    const cJSON *rc = cJSON_GetArrayItem(r, 0), *st = cJSON_GetArrayItem(r, 1);
    if (!cJSON_IsNumber(rc) || !cJSON_IsNumber(st) || rc->valuedouble < -4096 ||
        rc->valuedouble > 0 || st->valuedouble < -4096 || st->valuedouble > 4096)
        return -EPROTO;
    const cJSON *holder = cJSON_GetArrayItem(r, 3);
    for (int k = 0; k < 3; k += 2)
        if (answer_u64(cJSON_GetArrayItem(r, 2 + k), &v[k]) < 0)
            return -EPROTO;
    if (!cJSON_IsString(holder) || nsync_id_parse(holder->valuestring, &v[1]) < 0)
        return -EPROTO;
    it->rc = rc->valueint;
    memset(&it->reply, 0, sizeof it->reply);
    it->reply.status = st->valueint;
    it->reply.version = v[0];
    it->reply.lock_holder = v[1];
    it->reply.path_version = v[2];
    return 0;
}

int answer_decode(const char *data, size_t len, struct cluster_item *items, size_t n)
{
    cJSON *o = cJSON_ParseWithLength(data, len);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(o, "results");
    int rc = 0;
    if (!cJSON_IsArray(arr) || (size_t)cJSON_GetArraySize(arr) > n)
        rc = -EPROTO;
    const cJSON *r = rc == 0 ? arr->child : NULL;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!r) {
            items[i].rc = -ENOTCONN; /* not answered: not applied */
            continue;
        }
        rc = answer_one(r, &items[i]);
        r = r->next;
    }
    cJSON_Delete(o);
    return rc;
}
