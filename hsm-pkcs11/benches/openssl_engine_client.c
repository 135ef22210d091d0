/*
 * The OpenSSL path device makers use today: a TLS client whose private key stays in a PKCS#11
 * token through OpenSSL 3's `pkcs11` engine (libp11, Debian package libengine-pkcs11-openssl).
 * It performs N TLS 1.3 mutual-auth handshakes (no resumption) against HOST:PORT and prints
 * `handshakes_per_sec=<rate>`; the Rust benchmark (benches/pkcs11.rs) runs it against the same
 * server and token and compares.
 *
 * Build: cc -O2 -o openssl_engine_client openssl_engine_client.c -lssl -lcrypto
 * Usage: openssl_engine_client HOST PORT N MODULE_PATH PIN KEY_URI CERT_PEM CA_PEM
 * (SOFTHSM2_CONF must point at the token store.)
 */
#define OPENSSL_SUPPRESS_DEPRECATED 1
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/engine.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
    fprintf(stderr, "openssl_engine_client: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(1);
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    if (argc != 9) {
        fprintf(stderr, "usage: %s HOST PORT N MODULE_PATH PIN KEY_URI CERT_PEM CA_PEM\n", argv[0]);
        return 2;
    }
    const char *host = argv[1];
    int port = atoi(argv[2]);
    int n = atoi(argv[3]);

    ENGINE *engine = ENGINE_by_id("pkcs11");
    if (!engine) die("cannot load the pkcs11 engine (install libengine-pkcs11-openssl)");
    if (!ENGINE_ctrl_cmd_string(engine, "MODULE_PATH", argv[4], 0)) die("MODULE_PATH");
    if (!ENGINE_ctrl_cmd_string(engine, "PIN", argv[5], 0)) die("PIN");
    if (!ENGINE_init(engine)) die("ENGINE_init");
    EVP_PKEY *key = ENGINE_load_private_key(engine, argv[6], NULL, NULL);
    if (!key) die("ENGINE_load_private_key");

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx) die("SSL_CTX_new");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_use_certificate_chain_file(ctx, argv[7]) != 1) die("certificate");
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1) die("private key");
    if (SSL_CTX_load_verify_locations(ctx, argv[8], NULL) != 1) die("CA file");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);

    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) die("HOST must be an IPv4 address");

    double start = now();
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        if (fd < 0) die("socket");
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) die("connect");
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        SSL_set_tlsext_host_name(ssl, "localhost");
        SSL_set1_host(ssl, "localhost");
        if (SSL_connect(ssl) != 1) die("handshake");
        /* The server answers once it has verified the client: read that answer. */
        if (SSL_write(ssl, "x", 1) != 1) die("write");
        char reply[128];
        int got = SSL_read(ssl, reply, sizeof reply - 1);
        if (got <= 0 || strncmp(reply, "verified ", 9) != 0) die("the server did not verify the client");
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
    }
    double elapsed = now() - start;
    printf("handshakes_per_sec=%.1f\n", n / elapsed);

    EVP_PKEY_free(key);
    SSL_CTX_free(ctx);
    ENGINE_finish(engine);
    ENGINE_free(engine);
    return 0;
}
