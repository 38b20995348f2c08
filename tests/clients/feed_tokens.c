/* feed_tokens: stream text to the Personas ingress from C, as an LLM would.
 *
 *   feed_tokens ENDPOINT [TOKENS_PER_SECOND] < text
 *
 * Each token is one ZMQ message of UTF-8 text: a word piece of at most four bytes,
 * spaces attached to the piece that follows them (never splitting a UTF-8 sequence).
 * The turn ends with the msgpack map {"type": "end"}, written out byte by byte
 * to show that any language can speak the control messages without a library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#define MAX_TEXT (1 << 20)
#define MAX_PIECE 4

static void sleep_seconds(double s) {
    if (s <= 0) return;
    struct timespec ts = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
    nanosleep(&ts, NULL);
}

static int send_or_die(void *sock, const void *data, size_t len) {
    if (zmq_send(sock, data, len, 0) != (int)len) {
        fprintf(stderr, "feed_tokens: zmq_send: %s\n", zmq_strerror(zmq_errno()));
        exit(1);
    }
    return 1;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s ENDPOINT [TOKENS_PER_SECOND] < text\n", argv[0]);
        return 2;
    }
    double rate = argc > 2 ? atof(argv[2]) : 40.0;
    static char text[MAX_TEXT];
    size_t n = fread(text, 1, sizeof text - 1, stdin);
    text[n] = '\0';

    void *ctx = zmq_ctx_new();
    void *sock = zmq_socket(ctx, ZMQ_PUSH);
    int linger = 5000;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof linger);
    if (zmq_connect(sock, argv[1]) != 0) {
        fprintf(stderr, "feed_tokens: connect %s: %s\n", argv[1], zmq_strerror(zmq_errno()));
        return 1;
    }

    size_t i = 0, tokens = 0;
    while (i < n) {
        size_t start = i;
        while (i < n && text[i] == ' ') i++;          /* leading spaces ride with the piece */
        size_t len = 0;
        while (i < n && text[i] != ' ' && len < MAX_PIECE) {
            unsigned char c = (unsigned char)text[i];
            size_t width = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            i += width;                               /* never cut inside a UTF-8 sequence */
            len += width;
        }
        if (i > n) i = n;
        send_or_die(sock, text + start, i - start);
        tokens++;
        sleep_seconds(rate > 0 ? 1.0 / rate : 0);
    }
    /* msgpack: fixmap(1) { fixstr(4) "type": fixstr(3) "end" } */
    static const unsigned char end_msg[] = {0x81, 0xA4, 't', 'y', 'p', 'e', 0xA3, 'e', 'n', 'd'};
    send_or_die(sock, end_msg, sizeof end_msg);
    fprintf(stderr, "feed_tokens: sent %zu tokens + end\n", tokens);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return 0;
}
