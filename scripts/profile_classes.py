#!/usr/bin/env python3
"""Shares of a folded perf profile (inferno-collapse-perf output) by class of work, as a Markdown table.

Each sample goes to the first class found walking its stack from the leaf (docs/BENCHMARKS.md, "Where the CPU of
a PUT goes"). Usage: scripts/profile_classes.py target/profile/put-big-enc.folded
"""
import collections
import re
import sys

CLASSES = [
    ("page faults: fresh memory from the kernel", r"exc_page_fault"),
    ("AES-GCM decryption (uploads: the client's TLS records; downloads: the segments)",
     r"aes_gcm_decrypt|gcm_ghash|gcm_gmult"),
    ("AES-GCM encryption (uploads: the segments; downloads: TLS records to the client)", r"aes_gcm_encrypt"),
    ("CRC32 of the aws-chunked body to the store", r"crc_fast"),
    ("MD5", r"md5|Md5"),
    ("kernel copy, socket → proxy", r"^_copy_to_iter$"),
    ("kernel copy, proxy → socket", r"^_copy_from_iter$"),
    ("copies in the proxy (memcpy)", r"memcpy|memmove"),
    ("memset: zeroing", r"memset"),
    ("malloc / free", r"^(_int_free|_int_malloc|__GI___libc_malloc|__GI___libc_free|__libc_calloc|"
                      r"malloc_consolidate|sysmalloc|cfree|__libc_free|unlink_chunk|tcache)"),
    ("kernel: receive syscalls and TCP, without the copy",
     r"^(__libc_recv|__sys_recvfrom|tcp_recvmsg|recvfrom|__libc_read|ksys_read)"),
    ("kernel: send syscalls, TCP, loopback delivery, without the copy",
     r"^(do_writev|__writev|tcp_sendmsg|__libc_writev|__libc_send|__sys_sendto|ksys_write|__libc_write)"),
    ("runtime: epoll, futex, scheduling", r"epoll|futex|finish_task_switch|schedule|tokio::runtime|__sched_yield|park"),
    ("clock reads", r"clock_gettime|read_tsc"),
    ("rustls record handling, other", r"rustls::|tokio_rustls"),
    ("hyper HTTP/1 (parsing, buffering, dispatch)", r"hyper::|hyper_util::|httparse"),
    ("s3crypt's own request code (auth, signing, envelope, audit, body state machines)", r"s3crypt::|aws_lc"),
    ("nginx and OpenSSL", r"ngx_|SSL_|ssl3|EVP_|ossl_|aesni"),
]


def main(path):
    total = 0
    shares = collections.Counter()
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, n = line.rstrip().rsplit(" ", 1)
        n = int(n)
        total += n
        name = "other"
        for frame in reversed(stack.split(";")):
            hit = next((label for label, rx in CLASSES if re.search(rx, frame)), None)
            if hit:
                name = hit
                break
        shares[name] += n
    print("| what | share of the proxy's CPU samples |")
    print("|---|---|")
    for name, n in shares.most_common():
        print(f"| {name} | {100 * n / max(total, 1):.1f} % |")


if __name__ == "__main__":
    main(sys.argv[1])
