/*
 * tessera_check: may this product release run here now? Asks the Tessera agent daemon.
 *
 *   tessera_check PRODUCT VERSION RELEASED [FEATURE]
 *
 * Speaks HTTP/1.0 over the daemon's AF_UNIX socket (TESSERA_AGENT_SOCKET, default
 * /run/tessera/agent.sock) with nothing but POSIX. Prints the answer's code on stdout.
 * Exit codes: 0 entitled, 1 refused, 2 usage (or a question the agent calls malformed),
 * 3 agent unreachable.
 *
 * Build: cc -std=c99 -O2 -o tessera_check tessera_check.c
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define EXIT_ENTITLED 0
#define EXIT_REFUSED 1
#define EXIT_USAGE 2
#define EXIT_UNREACHABLE 3

#define DEFAULT_SOCKET "/run/tessera/agent.sock"
#define MAX_ANSWER 65536
#define TIMEOUT_S 10

static int usage(const char *program)
{
    fprintf(stderr, "usage: %s PRODUCT VERSION RELEASED(YYYY-MM-DD) [FEATURE]\n", program);
    return EXIT_USAGE;
}

/* Percent-encode `value` into `out` (RFC 3986 unreserved characters pass); 0 when it does not fit. */
static int append_encoded(char *out, size_t size, const char *value)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t used = strlen(out);
    for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
        int plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') ||
                    *p == '-' || *p == '.' || *p == '_' || *p == '~';
        if (used + (plain ? 1 : 3) >= size)
            return 0;
        if (plain) {
            out[used++] = (char)*p;
        } else {
            out[used++] = '%';
            out[used++] = hex[*p >> 4];
            out[used++] = hex[*p & 15];
        }
    }
    out[used] = '\0';
    return 1;
}

static int append(char *out, size_t size, const char *text)
{
    size_t used = strlen(out), more = strlen(text);
    if (used + more >= size)
        return 0;
    memcpy(out + used, text, more + 1);
    return 1;
}

static int write_all(int fd, const char *data, size_t length)
{
    while (length > 0) {
        ssize_t n = write(fd, data, length);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;
        data += n;
        length -= (size_t)n;
    }
    return 1;
}

/* The value of the JSON string member "code": codes are lowercase words and hyphens, so no escapes. */
static int find_code(const char *body, char *code, size_t size)
{
    const char *p = strstr(body, "\"code\"");
    size_t n = 0;
    if (p == NULL)
        return 0;
    p += strlen("\"code\"");
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p++ != ':')
        return 0;
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    if (*p++ != '"')
        return 0;
    while (*p && *p != '"' && n + 1 < size) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
            return 0;
        code[n++] = *p++;
    }
    code[n] = '\0';
    return *p == '"' && n > 0;
}

int main(int argc, char **argv)
{
    const char *socket_path = getenv("TESSERA_AGENT_SOCKET");
    char request[4096] = "GET /v1/check?product=";
    static char answer[MAX_ANSWER + 1];
    size_t received = 0;
    struct sockaddr_un address;
    struct timeval timeout = {TIMEOUT_S, 0};
    char code[64];
    int fd, status;
    const char *body;

    if (argc < 4 || argc > 5 || !*argv[1] || !*argv[2] || !*argv[3])
        return usage(argv[0]);
    if (socket_path == NULL || !*socket_path)
        socket_path = DEFAULT_SOCKET;

    if (!append_encoded(request, sizeof request, argv[1]) || !append(request, sizeof request, "&version=") ||
        !append_encoded(request, sizeof request, argv[2]) || !append(request, sizeof request, "&released=") ||
        !append_encoded(request, sizeof request, argv[3]) ||
        (argc == 5 && (!append(request, sizeof request, "&feature=") ||
                       !append_encoded(request, sizeof request, argv[4]))) ||
        !append(request, sizeof request, " HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n")) {
        fprintf(stderr, "%s: the question is too long\n", argv[0]);
        return EXIT_USAGE;
    }

    memset(&address, 0, sizeof address);
    address.sun_family = AF_UNIX;
    if (strlen(socket_path) >= sizeof address.sun_path) {
        fprintf(stderr, "%s: socket path too long: %s\n", argv[0], socket_path);
        return EXIT_UNREACHABLE;
    }
    strcpy(address.sun_path, socket_path);

    fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0) {
        fprintf(stderr, "%s: socket: %s\n", argv[0], strerror(errno));
        return EXIT_UNREACHABLE;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    if (connect(fd, (struct sockaddr *)&address, sizeof address) < 0) {
        fprintf(stderr, "%s: agent unreachable at %s: %s\n", argv[0], socket_path, strerror(errno));
        close(fd);
        return EXIT_UNREACHABLE;
    }
    if (!write_all(fd, request, strlen(request))) {
        fprintf(stderr, "%s: agent unreachable at %s: %s\n", argv[0], socket_path, strerror(errno));
        close(fd);
        return EXIT_UNREACHABLE;
    }
    /* HTTP/1.0 with Connection: close: the answer ends where the stream does. */
    for (;;) {
        ssize_t n = read(fd, answer + received, MAX_ANSWER - received);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "%s: no answer from the agent: %s\n", argv[0], strerror(errno));
            close(fd);
            return EXIT_UNREACHABLE;
        }
        if (n == 0 || (received += (size_t)n) == MAX_ANSWER)
            break;
    }
    close(fd);
    answer[received] = '\0';

    body = strstr(answer, "\r\n\r\n");
    if (sscanf(answer, "HTTP/%*d.%*d %d", &status) != 1 || body == NULL || !find_code(body, code, sizeof code)) {
        fprintf(stderr, "%s: the agent's answer is not one it gives\n", argv[0]);
        return EXIT_UNREACHABLE;
    }
    if (status == 200 && strcmp(code, "entitled") == 0) {
        printf("%s\n", code);
        return EXIT_ENTITLED;
    }
    if (status == 403) {
        printf("%s\n", code);
        return EXIT_REFUSED;
    }
    if (status == 400) {
        fprintf(stderr, "%s: %s: the agent calls the question malformed (released is YYYY-MM-DD)\n", argv[0], code);
        return EXIT_USAGE;
    }
    fprintf(stderr, "%s: the agent answered HTTP %d (%s)\n", argv[0], status, code);
    return EXIT_UNREACHABLE;
}
