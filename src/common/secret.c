/* The cluster secret file: made by `nsyncfs keygen`, checked at start, and
 * turned into the settings of GnuTLS and libcurl so that every node-to-node
 * connection is TLS 1.3 between two holders of the one key. */
#include "common/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <gnutls/crypto.h>
#include <gnutls/x509.h>

#define SECRET_MAX_BYTES 65536 /* a key and a certificate are ~1 KiB */

const char secret_priority[] = "NORMAL:-VERS-ALL:+VERS-TLS1.3";

struct secret {
    char *key_pem;
    char *cert_pem;
    gnutls_datum_t cert_der;
    gnutls_certificate_credentials_t cred;
};

#define ERR(...) (err ? (void)snprintf(err, errsz, __VA_ARGS__) : (void)0)

static int secret_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Key and self-signed certificate as PEM, into *key and *crt (gnutls_free). */
static int secret_make(gnutls_datum_t *key, gnutls_datum_t *crt, char *err, size_t errsz)
{
    gnutls_x509_privkey_t pk = NULL;
    gnutls_x509_crt_t c = NULL;
    int rc;
    unsigned char serial[16];
    time_t now = time(NULL);
    const char *step = "gnutls_x509_privkey_init";
    if ((rc = gnutls_x509_privkey_init(&pk)) < 0)
        goto out;
    step = "generating an ECDSA P-256 key";
    if ((rc = gnutls_x509_privkey_generate(pk, GNUTLS_PK_ECDSA,
                                           GNUTLS_CURVE_TO_BITS(GNUTLS_ECC_CURVE_SECP256R1), 0)) < 0)
        goto out;
    step = "building the certificate";
    if ((rc = gnutls_x509_crt_init(&c)) < 0 || (rc = gnutls_x509_crt_set_version(c, 3)) < 0 ||
        (rc = gnutls_rnd(GNUTLS_RND_NONCE, serial, sizeof serial)) < 0)
        goto out;
    serial[0] &= 0x7f; /* a positive serial */
    if ((rc = gnutls_x509_crt_set_serial(c, serial, sizeof serial)) < 0 ||
        (rc = gnutls_x509_crt_set_activation_time(c, now - 86400)) < 0 ||
        /* The certificate is a pinned identity, not a credential that
         * expires: rotating it means a new keygen (docs/security.md). */
        (rc = gnutls_x509_crt_set_expiration_time(c, now + 100LL * 365 * 86400)) < 0 ||
        (rc = gnutls_x509_crt_set_dn(c, "CN=nsyncfs cluster", NULL)) < 0 ||
        (rc = gnutls_x509_crt_set_key(c, pk)) < 0 ||
        (rc = gnutls_x509_crt_set_basic_constraints(c, 1, -1)) < 0 ||
        (rc = gnutls_x509_crt_set_key_usage(c, GNUTLS_KEY_DIGITAL_SIGNATURE | GNUTLS_KEY_KEY_CERT_SIGN)) < 0 ||
        (rc = gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_SERVER, 0)) < 0 ||
        (rc = gnutls_x509_crt_set_key_purpose_oid(c, GNUTLS_KP_TLS_WWW_CLIENT, 0)) < 0)
        goto out;
    step = "signing the certificate";
    if ((rc = gnutls_x509_crt_sign2(c, c, pk, GNUTLS_DIG_SHA256, 0)) < 0)
        goto out;
    step = "exporting";
    if ((rc = gnutls_x509_privkey_export2_pkcs8(pk, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, key)) < 0)
        goto out;
    if ((rc = gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_PEM, crt)) < 0) {
        gnutls_free(key->data);
        goto out;
    }
out:
    if (rc < 0)
        ERR("%s: %s", step, gnutls_strerror(rc));
    gnutls_x509_crt_deinit(c);
    gnutls_x509_privkey_deinit(pk);
    return rc < 0 ? -EIO : 0;
}

int secret_keygen(const char *path, char *err, size_t errsz)
{
    gnutls_datum_t key, crt;
    int rc = secret_make(&key, &crt, err, errsz);
    if (rc < 0)
        return rc;
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        rc = -errno;
        ERR("%s: %s", path, strerror(-rc));
    } else {
        /* O_CREAT's mode passes through the umask, which may only remove
         * bits; fchmod makes sure it is exactly 0600. */
        if ((rc = fchmod(fd, 0600) < 0 ? -errno : 0) == 0 &&
            (rc = secret_write_all(fd, key.data, key.size)) == 0 &&
            (rc = secret_write_all(fd, crt.data, crt.size)) == 0)
            rc = fsync(fd) < 0 ? -errno : 0;
        if (close(fd) < 0 && rc == 0)
            rc = -errno;
        if (rc < 0) {
            ERR("%s: %s", path, strerror(-rc));
            unlink(path);
        }
    }
    gnutls_memset(key.data, 0, key.size);
    gnutls_free(key.data);
    gnutls_free(crt.data);
    return rc;
}

void secret_free(struct secret *s)
{
    if (!s)
        return;
    if (s->cred)
        gnutls_certificate_free_credentials(s->cred);
    if (s->key_pem) {
        gnutls_memset(s->key_pem, 0, strlen(s->key_pem));
        free(s->key_pem);
    }
    free(s->cert_pem);
    gnutls_free(s->cert_der.data);
    free(s);
}

static char *secret_dup(const gnutls_datum_t *d)
{
    char *p = malloc(d->size + 1);
    if (p) {
        memcpy(p, d->data, d->size);
        p[d->size] = '\0';
    }
    return p;
}

/* The checks of the text: a key, a certificate of that very key. */
static int secret_parse(struct secret *s, const gnutls_datum_t *text, char *err, size_t errsz)
{
    gnutls_x509_privkey_t pk = NULL;
    gnutls_x509_crt_t c = NULL;
    gnutls_datum_t kp = {NULL, 0}, cp = {NULL, 0};
    unsigned char kid[64], cid[64];
    size_t klen = sizeof kid, clen = sizeof cid;
    int rc = -EINVAL;
    if (gnutls_x509_privkey_init(&pk) < 0 || gnutls_x509_crt_init(&c) < 0) {
        ERR("out of memory");
        rc = -ENOMEM;
        goto out;
    }
    if (gnutls_x509_privkey_import(pk, text, GNUTLS_X509_FMT_PEM) < 0) {
        ERR("no private key in it (make one with 'nsyncfs keygen FILE')");
        goto out;
    }
    if (gnutls_x509_crt_import(c, text, GNUTLS_X509_FMT_PEM) < 0) {
        ERR("no certificate in it (make one with 'nsyncfs keygen FILE')");
        goto out;
    }
    if (gnutls_x509_privkey_get_key_id(pk, 0, kid, &klen) < 0 ||
        gnutls_x509_crt_get_key_id(c, 0, cid, &clen) < 0 || klen != clen || memcmp(kid, cid, klen) != 0) {
        ERR("its certificate is not of its key");
        goto out;
    }
    if (gnutls_x509_privkey_export2_pkcs8(pk, GNUTLS_X509_FMT_PEM, NULL, GNUTLS_PKCS_PLAIN, &kp) < 0 ||
        gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_PEM, &cp) < 0 ||
        gnutls_x509_crt_export2(c, GNUTLS_X509_FMT_DER, &s->cert_der) < 0 ||
        !(s->key_pem = secret_dup(&kp)) || !(s->cert_pem = secret_dup(&cp))) {
        ERR("cannot export the key or certificate");
        rc = -ENOMEM;
        goto out;
    }
    if (gnutls_certificate_allocate_credentials(&s->cred) < 0 ||
        gnutls_certificate_set_x509_key_mem2(s->cred, &cp, &kp, GNUTLS_X509_FMT_PEM, NULL, 0) < 0) {
        ERR("GnuTLS refuses the key and certificate");
        goto out;
    }
    rc = 0;
out:
    if (kp.data) {
        gnutls_memset(kp.data, 0, kp.size);
        gnutls_free(kp.data);
    }
    gnutls_free(cp.data);
    gnutls_x509_crt_deinit(c);
    gnutls_x509_privkey_deinit(pk);
    return rc;
}

int secret_load(const char *path, struct secret **out, char *err, size_t errsz)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        ERR("%s: %s", path, strerror(e));
        return -e;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        ERR("%s: %s", path, strerror(-rc));
    } else if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        ERR("%s is not a regular file", path);
    } else if (st.st_mode & 077) {
        rc = -EPERM;
        ERR("%s is accessible by group or others (mode %04o): chmod 600 it", path,
            (unsigned)(st.st_mode & 07777));
    } else if (st.st_size == 0) {
        rc = -EINVAL;
        ERR("%s is empty (make one with 'nsyncfs keygen FILE')", path);
    } else if (st.st_size > SECRET_MAX_BYTES) {
        rc = -EINVAL;
        ERR("%s is too big to be a secret file (%lld bytes)", path, (long long)st.st_size);
    }
    if (rc < 0) {
        close(fd);
        return rc;
    }
    size_t len = (size_t)st.st_size;
    unsigned char *buf = malloc(len + 1);
    ssize_t n = buf ? read(fd, buf, len) : -1;
    int e = errno;
    close(fd);
    if (n != (ssize_t)len) {
        free(buf);
        ERR("%s: %s", path, n < 0 ? strerror(e) : "short read");
        return n < 0 ? -e : -EIO;
    }
    buf[len] = '\0';
    struct secret *s = calloc(1, sizeof *s);
    gnutls_datum_t text = {buf, (unsigned)len};
    char why[200] = "out of memory";
    rc = s ? secret_parse(s, &text, why, sizeof why) : -ENOMEM;
    gnutls_memset(buf, 0, len);
    free(buf);
    if (rc < 0) {
        ERR("%s: %s", path, why);
        secret_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

const char *secret_cert_pem(const struct secret *s)
{
    return s->cert_pem;
}

const char *secret_key_pem(const struct secret *s)
{
    return s->key_pem;
}

int secret_session_setup(const struct secret *s, gnutls_session_t session, bool server)
{
    if (gnutls_priority_set_direct(session, secret_priority, NULL) < 0 ||
        gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, s->cred) < 0)
        return -EIO;
    if (server)
        gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE);
    return 0;
}

bool secret_peer_ok(const struct secret *s, gnutls_session_t session)
{
    if (!session || gnutls_certificate_type_get(session) != GNUTLS_CRT_X509)
        return false;
    unsigned n = 0;
    const gnutls_datum_t *peers = gnutls_certificate_get_peers(session, &n);
    /* Exactly one certificate, byte for byte ours: no chain, no CA, nothing
     * that someone without the key could have made. */
    return peers && n == 1 && peers[0].size == s->cert_der.size &&
           memcmp(peers[0].data, s->cert_der.data, s->cert_der.size) == 0;
}

int secret_curl_setup(const struct secret *s, CURL *h)
{
    if (!s)
        return 0;
    struct curl_blob cert = {s->cert_pem, strlen(s->cert_pem), CURL_BLOB_NOCOPY};
    struct curl_blob key = {s->key_pem, strlen(s->key_pem), CURL_BLOB_NOCOPY};
    /* The certificate is self-signed, so trusting it alone accepts only a
     * server that proves it holds its key; the host name says nothing. */
    if (curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &cert) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_3) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &cert) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &key) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM") != CURLE_OK)
        return -EIO;
    return 0;
}

const char *secret_scheme(const struct secret *s)
{
    return s ? "https" : "http";
}
