/* Batched UDP receive and send (recvmmsg/sendmmsg) for the DNS listener.
 *
 * Written by hand on purpose: at ~100k answers per second most of the listener's time
 * is the kernel's recvfrom/sendto, paid per datagram with a Python call, an address
 * tuple and a bytes object each way. Python's socket module has neither recvmmsg nor
 * sendmmsg, so this helper reads up to `size` datagrams in one system call and sends the
 * replies to the last batch in one more. It keeps no Python state beyond the batch it
 * returned; the pure-Python path in server.py does the same thing one datagram at a
 * time, and tests/unit/resolver/test_udpbatch.py checks the two against each other.
 *
 * Linux only (recvmmsg/sendmmsg); where it does not build, server.py uses the fallback.
 */
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_DATAGRAM 65535

typedef struct {
    PyObject_HEAD
    int fd;
    unsigned int size;
    struct mmsghdr *msgs;
    struct iovec *iov;
    struct sockaddr_storage *names;
    char *buffers;
    /* the address tuple of each slot's last sender, reused while the sender is the
       same (a resolver or load generator sends many queries from one socket) */
    PyObject **addrs;
    socklen_t *addrlens;
    struct sockaddr_storage *cached; /* the address each slot's tuple was made from */
    unsigned int received; /* datagrams in the last batch */
} Batch;

static void Batch_dealloc(Batch *self) {
    if (self->addrs != NULL) {
        for (unsigned int i = 0; i < self->size; i++) Py_XDECREF(self->addrs[i]);
    }
    PyMem_Free(self->msgs);
    PyMem_Free(self->iov);
    PyMem_Free(self->names);
    PyMem_Free(self->buffers);
    PyMem_Free(self->addrs);
    PyMem_Free(self->addrlens);
    PyMem_Free(self->cached);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Batch_init(Batch *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"fd", "size", NULL};
    int fd;
    unsigned int size = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|I", kwlist, &fd, &size)) return -1;
    if (size == 0 || size > 1024) {
        PyErr_SetString(PyExc_ValueError, "size must be 1..1024");
        return -1;
    }
    self->fd = fd;
    self->size = size;
    self->msgs = PyMem_Calloc(size, sizeof(struct mmsghdr));
    self->iov = PyMem_Calloc(size, sizeof(struct iovec));
    self->names = PyMem_Calloc(size, sizeof(struct sockaddr_storage));
    self->buffers = PyMem_Malloc((size_t)size * MAX_DATAGRAM);
    self->addrs = PyMem_Calloc(size, sizeof(PyObject *));
    self->addrlens = PyMem_Calloc(size, sizeof(socklen_t));
    self->cached = PyMem_Calloc(size, sizeof(struct sockaddr_storage));
    if (!self->msgs || !self->iov || !self->names || !self->buffers || !self->addrs ||
        !self->addrlens || !self->cached) {
        PyErr_NoMemory();
        return -1;
    }
    self->received = 0;
    return 0;
}

/* The (host, port) tuple Python's socket module gives for this address, or NULL. */
static PyObject *address_tuple(const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)ss;
        if (!inet_ntop(AF_INET, &sin->sin_addr, host, sizeof host)) return NULL;
        return Py_BuildValue("(sH)", host, ntohs(sin->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)ss;
        if (!inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof host)) return NULL;
        return Py_BuildValue("(sHII)", host, ntohs(sin6->sin6_port),
                             ntohl(sin6->sin6_flowinfo), sin6->sin6_scope_id);
    }
    return NULL;
}

PyDoc_STRVAR(recv_doc,
"recv() -> list of (data, address)\n\n"
"Read the datagrams waiting on the socket, up to the batch size, in one recvmmsg call\n"
"(non-blocking). An empty list: nothing was waiting. Datagrams longer than 65,535\n"
"bytes cannot exist; an address family other than IPv4/IPv6 is skipped.");

static PyObject *Batch_recv(Batch *self, PyObject *Py_UNUSED(ignored)) {
    unsigned int size = self->size;
    for (unsigned int i = 0; i < size; i++) {
        self->iov[i].iov_base = self->buffers + (size_t)i * MAX_DATAGRAM;
        self->iov[i].iov_len = MAX_DATAGRAM;
        struct msghdr *h = &self->msgs[i].msg_hdr;
        h->msg_iov = &self->iov[i];
        h->msg_iovlen = 1;
        h->msg_name = &self->names[i];
        h->msg_namelen = sizeof(struct sockaddr_storage);
        h->msg_control = NULL;
        h->msg_controllen = 0;
        h->msg_flags = 0;
    }
    /* The GIL is kept across the call: it never blocks (MSG_DONTWAIT) and takes
       microseconds, while letting go of it hands it to a busy worker thread (a zone parse)
       for up to the switch interval before the loop gets it back. */
    int n = recvmmsg(self->fd, self->msgs, size, MSG_DONTWAIT, NULL);
    self->received = 0;
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) return PyList_New(0);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (int i = 0; i < n; i++) {
        struct msghdr *h = &self->msgs[i].msg_hdr;
        socklen_t len = h->msg_namelen;
        PyObject *addr = NULL;
        if (self->addrs[i] != NULL && self->addrlens[i] == len &&
            memcmp(&self->names[i], &self->cached[i], len) == 0) {
            addr = self->addrs[i]; /* the slot's last sender again */
        } else if (i > 0 && self->addrlens[i - 1] == len &&
                   memcmp(&self->names[i], &self->names[i - 1], len) == 0) {
            addr = self->addrs[i - 1]; /* the same sender as the datagram before */
            Py_INCREF(addr);
            Py_XSETREF(self->addrs[i], addr);
        } else {
            addr = address_tuple(&self->names[i]);
            if (addr == NULL) {
                if (PyErr_Occurred()) {
                    Py_DECREF(out);
                    return NULL;
                }
                addr = Py_None;
                Py_INCREF(addr);
            }
            Py_XSETREF(self->addrs[i], addr);
        }
        self->addrlens[i] = len;
        memcpy(&self->cached[i], &self->names[i], len);
        PyObject *data = PyBytes_FromStringAndSize(self->iov[i].iov_base, self->msgs[i].msg_len);
        if (data == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyObject *pair = PyTuple_Pack(2, data, addr);
        Py_DECREF(data);
        if (pair == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, i, pair);
    }
    self->received = (unsigned int)n;
    return out;
}

PyDoc_STRVAR(send_doc,
"send(replies) -> int\n\n"
"Send replies[i] (bytes, or None for no reply) to the sender of the i-th datagram of\n"
"the last recv(), in sendmmsg calls. Returns how many were sent; replies that do not\n"
"fit the socket buffer are dropped, as a busy authoritative server does.");

static PyObject *Batch_send(Batch *self, PyObject *replies) {
    if (!PyList_Check(replies)) {
        PyErr_SetString(PyExc_TypeError, "replies must be a list");
        return NULL;
    }
    Py_ssize_t count = PyList_GET_SIZE(replies);
    if (count > (Py_ssize_t)self->received) {
        PyErr_SetString(PyExc_ValueError, "more replies than datagrams received");
        return NULL;
    }
    unsigned int m = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *reply = PyList_GET_ITEM(replies, i);
        if (reply == Py_None) continue;
        if (!PyBytes_Check(reply)) {
            PyErr_SetString(PyExc_TypeError, "a reply must be bytes or None");
            return NULL;
        }
        /* slot m's buffer is free once its datagram was read: the iovec points at the
           reply's own bytes (the list keeps them alive for the call) */
        self->iov[m].iov_base = PyBytes_AS_STRING(reply);
        self->iov[m].iov_len = (size_t)PyBytes_GET_SIZE(reply);
        struct msghdr *h = &self->msgs[m].msg_hdr;
        h->msg_iov = &self->iov[m];
        h->msg_iovlen = 1;
        if (m != (unsigned int)i) memcpy(&self->names[m], &self->names[i], self->addrlens[i]);
        h->msg_name = &self->names[m];
        h->msg_namelen = self->addrlens[i];
        h->msg_control = NULL;
        h->msg_controllen = 0;
        h->msg_flags = 0;
        m++;
    }
    self->received = 0; /* the names were compacted: no second send for this batch */
    unsigned int sent = 0;
    while (sent < m) {
        int n = sendmmsg(self->fd, self->msgs + sent, m - sent, MSG_DONTWAIT); /* GIL kept: see recv */
        if (n < 0) {
            if (errno == EINTR) continue;
            /* a full buffer or an ICMP error queued on the socket: skip that reply */
            sent++;
            continue;
        }
        sent += (unsigned int)n;
        if (n == 0) break;
    }
    return PyLong_FromUnsignedLong(sent);
}

static PyMethodDef Batch_methods[] = {
    {"recv", (PyCFunction)Batch_recv, METH_NOARGS, recv_doc},
    {"send", (PyCFunction)Batch_send, METH_O, send_doc},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "shadowdns.resolver._udpbatch.Batch",
    .tp_doc = PyDoc_STR("Batch(fd, size=64): recvmmsg/sendmmsg on one UDP socket."),
    .tp_basicsize = sizeof(Batch),
    .tp_itemsize = 0,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Batch_init,
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_methods = Batch_methods,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_udpbatch",
    "recvmmsg/sendmmsg batches for the UDP listener (see server.py).", -1, NULL,
};

PyMODINIT_FUNC PyInit__udpbatch(void) {
    if (PyType_Ready(&BatchType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
