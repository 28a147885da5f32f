/*
 * make bench-json: what jansson's parse of a request body costs, alone,
 * for the bodies that bench/corelog.lua, channel.lua and logtank.lua send
 * (bench/README.md, issue 15).  The same call as the module's (json_loadb
 * with JSON_REJECT_DUPLICATES and JSON_DECODE_ANY) and the same kind of
 * allocator (a bump allocator reset after each parse, as the module's
 * per-parse pool is destroyed), so the figure is jansson's lexer and tree
 * alone, without nginx around it.  Prints microseconds per parse, the
 * best of five rounds.
 */

#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <time.h>


#define ARENA_SIZE  65536
#define PARSES      200000
#define ROUNDS      5


static char    arena[ARENA_SIZE];
static size_t  used;


static void *
arena_alloc(size_t size)
{
    void  *p;

    size = (size + 15) & ~(size_t) 15;

    if (used + size > ARENA_SIZE) {
        return NULL;
    }

    p = arena + used;
    used += size;

    return p;
}


static void
arena_free(void *p)
{
    (void) p;
}


static double
now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


int
main(void)
{
    int           i, b, round;
    double        t, best;
    size_t        len, allocated;
    json_t       *json;
    json_error_t  err;

    static const struct {
        const char  *route;
        const char  *body;
    } bodies[] = {
        { "core_log",
          "{\"status\":200,\"method\":\"GET\",\"elapsedTime\":123.5,"
          "\"corePathnameId\":\"9cda7411-cbec-4e41-9403-d39b66c146ff\","
          "\"requestId\":\"00000000-0000-4000-8000-000000155cc1\","
          "\"responseId\":\"00000000-0000-4000-9000-000000155cc1\"}" },
        { "channel_log",
          "{\"channel_id\":\"659b607b-0177-42d7-bdf7-45380f0530fd\","
          "\"label\":\"checkout 0-1-123\",\"reference\":\"user-123\","
          "\"type\":\"action\",\"tags\":\"bench, web\","
          "\"custom_references\":{\"order\":\"o-123\",\"amount\":123}}" },
        { "logtank",
          "{\"logtank\":{\"resource_type\":\"LISTENER\","
          "\"resource_id\":\"res-0-1-123456\","
          "\"log_group_id\":\"9d77ee0b-7d72-4836-b0bb-aa9981cd5043\","
          "\"log_stream_id\":\"b6c2b9b0-7e43-4d39-b278-25e4591dd820\"}}" }
    };

    json_set_alloc_funcs(arena_alloc, arena_free);

    printf("jansson %s, json_loadb, best of %d rounds of %d parses\n",
           JANSSON_VERSION, ROUNDS, PARSES);

    for (b = 0; b < (int) (sizeof(bodies) / sizeof(bodies[0])); b++) {
        len = strlen(bodies[b].body);
        best = 0;
        allocated = 0;

        for (round = 0; round < ROUNDS; round++) {
            t = now();

            for (i = 0; i < PARSES; i++) {
                used = 0;

                json = json_loadb(bodies[b].body, len,
                                  JSON_REJECT_DUPLICATES|JSON_DECODE_ANY,
                                  &err);
                if (json == NULL) {
                    fprintf(stderr, "%s: %s\n", bodies[b].route, err.text);
                    return 1;
                }
            }

            t = now() - t;
            allocated = used;

            if (round == 0 || t < best) {
                best = t;
            }
        }

        printf("  %-12s %4zu bytes  %5.2f us per parse  %5zu bytes "
               "allocated\n", bodies[b].route, len, best / PARSES * 1e6,
               allocated);
    }

    return 0;
}
