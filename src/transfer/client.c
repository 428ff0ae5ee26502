/* stub: being written */
typedef int nsync_stub_client;
