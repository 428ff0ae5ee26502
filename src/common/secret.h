/* The cluster secret: one file, identical on every node, holding an ECDSA key
 * and the self-signed certificate of that key (docs/security.md). This module
 * makes it (keygen), reads and checks it, and tells each TLS library in use
 * (GnuTLS for the raft port and the HTTP server, libcurl for our requests)
 * to accept only a peer that presents that very certificate. */
#ifndef NSYNC_SECRET_H
#define NSYNC_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#include <curl/curl.h>
#include <gnutls/gnutls.h>

struct secret;

/* Write a new key and certificate to path: created with O_EXCL, mode 0600.
 * 0; -EEXIST if path exists; -errno from the file system; -EIO if GnuTLS
 * could not make the key (err says why). Any thread. */
int secret_keygen(const char *path, char *err, size_t errsz);

/* Read and check path. 0 and *out (the caller's, secret_free); -EPERM if the
 * file is readable or writable by group or others; -EINVAL if it is empty,
 * not a regular file, too big, or not a key plus the matching certificate;
 * -errno if it cannot be read. err gets one line saying what is wrong. */
int secret_load(const char *path, struct secret **out, char *err, size_t errsz);
void secret_free(struct secret *s);

/* NUL-terminated PEM texts, owned by s (MHD wants them so). */
const char *secret_cert_pem(const struct secret *s);
const char *secret_key_pem(const struct secret *s);

/* The TLS 1.3-only priority string used on every connection. */
extern const char secret_priority[];

/* Make session (already gnutls_init'ed by the caller) use our key and
 * certificate; a server session also requires the client's certificate.
 * 0 or -EIO. Any thread; s is read-only here. */
int secret_session_setup(const struct secret *s, gnutls_session_t session, bool server);

/* After the handshake: true only if the peer presented exactly our
 * certificate (the one whose key only cluster members hold). */
bool secret_peer_ok(const struct secret *s, gnutls_session_t session);

/* libcurl: HTTPS with our certificate as the only trusted one and as our
 * client certificate, TLS 1.3, no host-name check (the certificate is the
 * identity). s NULL: nothing (plain HTTP). 0 or -EIO. The caller owns h. */
int secret_curl_setup(const struct secret *s, CURL *h);

/* "https" with a secret, "http" without: the scheme of our URLs. */
const char *secret_scheme(const struct secret *s);

#endif
