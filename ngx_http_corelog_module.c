
/*
 * Copyright (C) corelog authors
 *
 * ngx_http_corelog_module: log-ingestion JSON APIs written to PostgreSQL
 * on nginx's event loop.  This file holds the module definition only:
 * directives, configuration create/merge and the process hooks.
 */


#include "ngx_http_corelog.h"


static ngx_int_t ngx_http_corelog_init(ngx_conf_t *cf);
static void *ngx_http_corelog_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_corelog_init_main_conf(ngx_conf_t *cf, void *conf);
static void *ngx_http_corelog_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_corelog_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child);
static char *ngx_http_corelog_check_location(ngx_conf_t *cf,
    ngx_http_corelog_loc_conf_t *conf, ngx_http_core_loc_conf_t *hlcf);
static void ngx_http_corelog_conf_error(ngx_conf_t *cf,
    ngx_http_core_loc_conf_t *hlcf, ngx_http_corelog_conf_pos_t *pos,
    const char *text);
static ngx_uint_t ngx_http_corelog_conf_returns(ngx_conf_t *cf);
static ngx_array_t **ngx_http_corelog_conf_codes(ngx_conf_t *cf,
    void **loc_conf);
static ngx_uint_t ngx_http_corelog_conf_direct(ngx_conf_t *cf);
static void ngx_http_corelog_conf_pos(ngx_conf_t *cf,
    ngx_http_corelog_conf_pos_t *pos);
static char *ngx_http_corelog_postgres(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_corelog_token_cache(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_corelog_auth_request(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_corelog_token_check(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_corelog_api(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_corelog_error(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_corelog_resource_types(ngx_conf_t *cf,
    ngx_command_t *cmd, void *conf);
static char *ngx_http_corelog_status(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_corelog_init_module(ngx_cycle_t *cycle);
static ngx_int_t ngx_http_corelog_init_process(ngx_cycle_t *cycle);
static void ngx_http_corelog_exit_process(ngx_cycle_t *cycle);


static ngx_conf_num_bounds_t  ngx_http_corelog_connections_bounds = {
    ngx_conf_check_num_bounds, 1, 256
};

static ngx_conf_num_bounds_t  ngx_http_corelog_queue_bounds = {
    ngx_conf_check_num_bounds, 1, 1048576
};

static ngx_conf_num_bounds_t  ngx_http_corelog_batch_bounds = {
    ngx_conf_check_num_bounds, 1, 1000
};


static ngx_command_t  ngx_http_corelog_commands[] = {

    { ngx_string("corelog_postgres"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_corelog_postgres,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("corelog_connections"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_corelog_main_conf_t, connections),
      &ngx_http_corelog_connections_bounds },

    { ngx_string("corelog_queue_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_corelog_main_conf_t, queue_max),
      &ngx_http_corelog_queue_bounds },

    { ngx_string("corelog_token_queue_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_corelog_main_conf_t, token_queue_max),
      &ngx_http_corelog_queue_bounds },

    { ngx_string("corelog_batch_max"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_num_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_corelog_main_conf_t, batch_max),
      &ngx_http_corelog_batch_bounds },

    { ngx_string("corelog_batch_wait"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_corelog_main_conf_t, batch_wait),
      NULL },

    { ngx_string("corelog_query_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_corelog_main_conf_t, query_timeout),
      NULL },

    { ngx_string("corelog_connect_timeout"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_conf_set_msec_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_corelog_main_conf_t, connect_timeout),
      NULL },

    { ngx_string("corelog_prepared_statements"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_MAIN_CONF_OFFSET,
      offsetof(ngx_http_corelog_main_conf_t, prepare),
      NULL },

    { ngx_string("corelog_token_cache"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_corelog_token_cache,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("corelog_auth_request"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_corelog_auth_request,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("corelog_token_check"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_corelog_token_check,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("corelog_api"),
      NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_corelog_api,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("corelog_error"),
      NGX_HTTP_LOC_CONF|NGX_CONF_TAKE1,
      ngx_http_corelog_error,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("corelog_status_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE1,
      ngx_http_corelog_stats_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("corelog_status"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_corelog_status,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("corelog_logtank_resource_types"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_1MORE,
      ngx_http_corelog_resource_types,
      NGX_HTTP_LOC_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_corelog_module_ctx = {
    ngx_http_corelog_variables_add,        /* preconfiguration */
    ngx_http_corelog_init,                 /* postconfiguration */

    ngx_http_corelog_create_main_conf,     /* create main configuration */
    ngx_http_corelog_init_main_conf,       /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_corelog_create_loc_conf,      /* create location configuration */
    ngx_http_corelog_merge_loc_conf        /* merge location configuration */
};


ngx_module_t  ngx_http_corelog_module = {
    NGX_MODULE_V1,
    &ngx_http_corelog_module_ctx,          /* module context */
    ngx_http_corelog_commands,             /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    ngx_http_corelog_init_module,          /* init module */
    ngx_http_corelog_init_process,         /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    ngx_http_corelog_exit_process,         /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


static ngx_int_t
ngx_http_corelog_init(ngx_conf_t *cf)
{
    ngx_http_core_loc_conf_t      *hlcf;
    ngx_http_corelog_main_conf_t  *cmcf;

    static ngx_str_t  request_id = ngx_string("request_id");

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_corelog_module);

    cmcf->request_id_index = ngx_http_get_variable_index(cf, &request_id);
    if (cmcf->request_id_index == NGX_ERROR) {
        return NGX_ERROR;
    }

    /*
     * nginx's "resolver" at the http level (merged by now) re-resolves
     * the conninfo's host names in the workers; the stand-in that nginx
     * makes without one has no servers.
     */

    hlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (hlcf->resolver && hlcf->resolver->connections.nelts) {
        cmcf->hosts.resolver = hlcf->resolver;
        cmcf->hosts.resolver_timeout = hlcf->resolver_timeout;
    }

    if (ngx_http_corelog_stats_init(cf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_corelog_auth_init(cf);
}


static void *
ngx_http_corelog_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_corelog_main_conf_t  *cmcf;

    cmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_corelog_main_conf_t));
    if (cmcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     cmcf->conninfo = { 0, NULL };
     *     cmcf->keywords = NULL;
     *     cmcf->values = NULL;
     *     cmcf->hosts = { NULL, 0, ..., NULL, 0 };
     *     cmcf->worker = NULL;
     */

    cmcf->connections = NGX_CONF_UNSET_UINT;
    cmcf->queue_max = NGX_CONF_UNSET_UINT;
    cmcf->token_queue_max = NGX_CONF_UNSET_UINT;
    cmcf->batch_max = NGX_CONF_UNSET_UINT;
    cmcf->batch_wait = NGX_CONF_UNSET_MSEC;
    cmcf->query_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->connect_timeout = NGX_CONF_UNSET_MSEC;
    cmcf->token_cache_size = NGX_CONF_UNSET_UINT;
    cmcf->token_cache_ttl = NGX_CONF_UNSET_MSEC;
    cmcf->prepare = NGX_CONF_UNSET;

    return cmcf;
}


static char *
ngx_http_corelog_init_main_conf(ngx_conf_t *cf, void *conf)
{
    ngx_http_corelog_main_conf_t  *cmcf = conf;

    ngx_conf_init_uint_value(cmcf->connections, 4);
    ngx_conf_init_uint_value(cmcf->queue_max, 1024);
    ngx_conf_init_uint_value(cmcf->token_queue_max, 1024);
    ngx_conf_init_uint_value(cmcf->batch_max, 100);
    ngx_conf_init_msec_value(cmcf->batch_wait, 2);
    ngx_conf_init_msec_value(cmcf->query_timeout, 5000);
    ngx_conf_init_msec_value(cmcf->connect_timeout, 5000);
    ngx_conf_init_uint_value(cmcf->token_cache_size, 1024);
    ngx_conf_init_msec_value(cmcf->token_cache_ttl, 30000);
    ngx_conf_init_value(cmcf->prepare, 1);

    if (cmcf->query_timeout == 0 || cmcf->connect_timeout == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: \"corelog_query_timeout\" and "
                           "\"corelog_connect_timeout\" must be more than 0");
        return NGX_CONF_ERROR;
    }

    /*
     * Half of corelog_query_timeout waiting for a connection, half for the
     * statement; PostgreSQL ends a statement at four fifths of its half,
     * so that the module hears of it (rolled back) before it gives up.
     */

    cmcf->wait_timeout = ngx_max(cmcf->query_timeout / 2, 1);
    cmcf->statement_timeout = ngx_max(cmcf->query_timeout
                                      - cmcf->wait_timeout, 1);
    cmcf->server_timeout = ngx_max(cmcf->statement_timeout * 4 / 5, 1);

    /* a write that waits for others must not run out of its own wait */

    if (cmcf->batch_wait >= cmcf->wait_timeout) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: \"corelog_batch_wait\" %Mms must be "
                           "less than half of \"corelog_query_timeout\" "
                           "(%Mms), how long a write may wait for a "
                           "connection", cmcf->batch_wait,
                           cmcf->query_timeout);
        return NGX_CONF_ERROR;
    }

    if (cmcf->keywords && cmcf->prepare) {
        return ngx_http_corelog_pg_options(cf, cmcf);
    }

    return NGX_CONF_OK;
}


static void *
ngx_http_corelog_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_corelog_loc_conf_t  *clcf;

    clcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_corelog_loc_conf_t));
    if (clcf == NULL) {
        return NULL;
    }

    /*
     * set by ngx_pcalloc():
     *
     *     clcf->api = NULL;
     *     clcf->api_args = NULL;
     *     clcf->error_api = NULL;
     *     clcf->handler = NULL;
     *     clcf->auth_pos = { { 0, NULL }, 0 };
     *     clcf->handler_pos = { { 0, NULL }, 0 };
     */

    clcf->auth_uri.len = NGX_CONF_UNSET_SIZE;
    clcf->token_check = NGX_CONF_UNSET_UINT;
    clcf->resource_types = NGX_CONF_UNSET_PTR;

    return clcf;
}


static char *
ngx_http_corelog_merge_loc_conf(ngx_conf_t *cf, void *parent, void *child)
{
    ngx_http_corelog_loc_conf_t *prev = parent;
    ngx_http_corelog_loc_conf_t *conf = child;

    ngx_http_core_loc_conf_t  *hlcf;

    if (conf->auth_uri.len == NGX_CONF_UNSET_SIZE) {
        conf->auth_uri = prev->auth_uri;
        conf->auth_pos = prev->auth_pos;
    }

    if (conf->auth_uri.len == NGX_CONF_UNSET_SIZE) {
        ngx_str_null(&conf->auth_uri);
    }

    ngx_conf_merge_ptr_value(conf->resource_types, prev->resource_types,
                             NULL);

    hlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    /*
     * An "if" or "limit_except" block keeps its location's content handler
     * (nginx sets none of its own), and with it our directives; a nested
     * location does not.
     */

    if (hlcf->noname && conf->handler == NULL) {

        /* nginx looks for a limit_except block's handler in the block */

        if (hlcf->lmt_excpt && hlcf->handler == NULL) {
            hlcf->handler = prev->handler;
        }

        conf->handler = prev->handler;
        conf->handler_pos = prev->handler_pos;
        conf->api = prev->api;
        conf->api_args = prev->api_args;
        conf->error_api = prev->error_api;

        if (conf->token_check == NGX_CONF_UNSET_UINT) {
            conf->token_check = prev->token_check;
        }
    }

    if (conf->token_check == NGX_CONF_UNSET_UINT) {
        conf->token_check = NGX_HTTP_CORELOG_TOKEN_OFF;
    }

    if (conf->handler == NULL) {
        return NGX_CONF_OK;
    }

    return ngx_http_corelog_check_location(cf, conf, hlcf);
}


/*
 * A location served by one of our handlers: nothing else may serve it,
 * and it must be able to work.  Errors name the location and the line of
 * the directive at fault: merging runs after the whole http{} is read.
 */

static char *
ngx_http_corelog_check_location(ngx_conf_t *cf,
    ngx_http_corelog_loc_conf_t *conf, ngx_http_core_loc_conf_t *hlcf)
{
    ngx_http_corelog_main_conf_t  *cmcf;

    if (hlcf->handler != conf->handler
        && (hlcf->handler != NULL || !hlcf->noname))
    {
        ngx_http_corelog_conf_error(cf, hlcf, &conf->handler_pos,
                                    "has another content handler as well "
                                    "(proxy_pass, fastcgi_pass, ...): "
                                    "a location takes one of "
                                    "\"corelog_api\", \"corelog_token_check\""
                                    ", \"corelog_error\", \"corelog_status\""
                                    " and no other");
        return NGX_CONF_ERROR;
    }

    if (hlcf->noname) {
        return NGX_CONF_OK;
    }

    if (ngx_http_corelog_conf_returns(cf)) {
        ngx_http_corelog_conf_error(cf, hlcf, &conf->handler_pos,
                                    "also has \"return\", which answers "
                                    "before the module (and any "
                                    "authentication) runs");
        return NGX_CONF_ERROR;
    }

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_corelog_module);

    if (conf->handler == ngx_http_corelog_status_handler
        && cmcf->stats_zone == NULL)
    {
        ngx_http_corelog_conf_error(cf, hlcf, &conf->handler_pos,
                                    "has \"corelog_status\", which needs "
                                    "\"corelog_status_zone\" at the http "
                                    "level");
        return NGX_CONF_ERROR;
    }

    if (conf->handler == ngx_http_corelog_token_handler
        && cmcf->conninfo.len == 0)
    {
        ngx_http_corelog_conf_error(cf, hlcf, &conf->handler_pos,
                                    "has \"corelog_token_check\", which "
                                    "needs \"corelog_postgres\" at the "
                                    "http level");
        return NGX_CONF_ERROR;
    }

    if (conf->handler == ngx_http_corelog_token_handler) {
        conf->token_direct = ngx_http_corelog_conf_direct(cf);
    }

    if (conf->api == NULL) {
        return NGX_CONF_OK;
    }

    if (conf->auth_uri.len == 0) {
        ngx_http_corelog_conf_error(cf, hlcf, &conf->handler_pos,
                                    "has \"corelog_api\", which needs "
                                    "\"corelog_auth_request\" in this "
                                    "location or an enclosing one");
        return NGX_CONF_ERROR;
    }

    if (cmcf->conninfo.len == 0) {
        ngx_http_corelog_conf_error(cf, hlcf, &conf->handler_pos,
                                    "has \"corelog_api\", which needs "
                                    "\"corelog_postgres\" at the http "
                                    "level");
        return NGX_CONF_ERROR;
    }

    /* a body in a temporary file is read back with a blocking read */

    if (hlcf->client_max_body_size == 0
        || (off_t) hlcf->client_body_buffer_size < hlcf->client_max_body_size)
    {
        ngx_log_error(NGX_LOG_WARN, cf->log, 0,
                      "corelog: location \"%V\": \"client_body_buffer_size\" "
                      "%uz is smaller than \"client_max_body_size\" %O: "
                      "larger bodies are written to a temporary file and "
                      "read back with a blocking read in %V:%ui",
                      &hlcf->name, hlcf->client_body_buffer_size,
                      hlcf->client_max_body_size, &conf->handler_pos.file,
                      conf->handler_pos.line);
    }

    return NGX_CONF_OK;
}


static void
ngx_http_corelog_conf_error(ngx_conf_t *cf, ngx_http_core_loc_conf_t *hlcf,
    ngx_http_corelog_conf_pos_t *pos, const char *text)
{
    ngx_log_error(NGX_LOG_EMERG, cf->log, 0,
                  "corelog: location \"%V\" %s in %V:%ui",
                  &hlcf->name, text, &pos->file, pos->line);
}


/*
 * The rewrite module's script codes of a location (or of a server, with
 * its server{} context's loc_conf): the first field of its location
 * configuration.  NULL without the module.
 */

static ngx_array_t **
ngx_http_corelog_conf_codes(ngx_conf_t *cf, void **loc_conf)
{
    ngx_uint_t  i;

    for (i = 0; cf->cycle->modules[i]; i++) {
        if (cf->cycle->modules[i]->type == NGX_HTTP_MODULE
            && ngx_strcmp(cf->cycle->modules[i]->name,
                          "ngx_http_rewrite_module") == 0)
        {
            return loc_conf[cf->cycle->modules[i]->ctx_index];
        }
    }

    return NULL;
}


/*
 * A "corelog_token_check" location that an API location may consult
 * without a subrequest, if it is the exact location ("location = URI")
 * of the API location's auth URI (auth.c looks for exact locations only,
 * as no regular expression can take a URI from one): nothing may run
 * there before the content handler.  A subrequest starts in the server's
 * rewrite phase, then the location's, and skips the access phase; so
 * neither the server nor the location may have rewrite codes (rewrite,
 * return, set, if...).  Otherwise every request goes through the
 * subrequest, as the codes may refuse or redirect it.
 */

static ngx_uint_t
ngx_http_corelog_conf_direct(ngx_conf_t *cf)
{
    ngx_array_t               **codes;
    ngx_http_conf_ctx_t        *ctx;
    ngx_http_core_srv_conf_t   *cscf;

    ctx = cf->ctx;
    codes = ngx_http_corelog_conf_codes(cf, ctx->loc_conf);

    if (codes && *codes) {
        return 0;
    }

    cscf = ngx_http_conf_get_module_srv_conf(cf, ngx_http_core_module);

    if (cscf == NULL || cscf->ctx == NULL) {
        return 0;
    }

    codes = ngx_http_corelog_conf_codes(cf, cscf->ctx->loc_conf);

    return (codes == NULL || *codes == NULL);
}


/*
 * Whether the location has a "return" of its own (not one inside an "if"):
 * it answers in the rewrite phase, before access and content.  The rewrite
 * module keeps a location's script codes in the first field of its
 * location configuration, one code after the other, each starting with
 * its function; an "if" code is followed by its block's codes, and says
 * how far they reach.
 */

static ngx_uint_t
ngx_http_corelog_conf_returns(ngx_conf_t *cf)
{
    u_char                     *p, *last;
    uintptr_t                   code;
    ngx_array_t               **codes;
    ngx_http_conf_ctx_t        *ctx;
    ngx_http_script_if_code_t   ifc;

    ctx = cf->ctx;
    codes = ngx_http_corelog_conf_codes(cf, ctx->loc_conf);

    if (codes == NULL || *codes == NULL) {
        return 0;
    }

    p = (*codes)->elts;
    last = p + (*codes)->nelts * (*codes)->size;

    while (p + sizeof(uintptr_t) <= last) {
        ngx_memcpy(&code, p, sizeof(uintptr_t));

        if (code == (uintptr_t) ngx_http_script_return_code) {
            return 1;
        }

        if (code == (uintptr_t) ngx_http_script_if_code
            && p + sizeof(ngx_http_script_if_code_t) <= last)
        {
            ngx_memcpy(&ifc, p, sizeof(ngx_http_script_if_code_t));

            if (ifc.next >= sizeof(ngx_http_script_if_code_t)) {
                p += ifc.next;
                continue;
            }
        }

        p += sizeof(uintptr_t);
    }

    return 0;
}


static char *
ngx_http_corelog_postgres(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_corelog_main_conf_t  *cmcf = conf;

    ngx_str_t  *value;

    if (cmcf->conninfo.data) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (value[1].len == 0) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: empty conninfo in \"%V\"", &cmd->name);
        return NGX_CONF_ERROR;
    }

    cmcf->conninfo = value[1];

    return ngx_http_corelog_pg_conninfo(cf, cmcf);
}


static char *
ngx_http_corelog_token_cache(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_corelog_main_conf_t  *cmcf = conf;

    ngx_int_t   n;
    ngx_str_t  *value;

    if (cmcf->token_cache_size != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        if (cf->args->nelts != 2) {
            return "takes no time with \"off\"";
        }

        cmcf->token_cache_size = 0;
        cmcf->token_cache_ttl = 0;
        return NGX_CONF_OK;
    }

    n = ngx_atoi(value[1].data, value[1].len);
    if (n <= 0 || n > 1048576) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: invalid token cache size \"%V\", "
                           "expected 1..1048576 or \"off\"", &value[1]);
        return NGX_CONF_ERROR;
    }

    cmcf->token_cache_size = n;

    if (cf->args->nelts == 3) {
        cmcf->token_cache_ttl = ngx_parse_time(&value[2], 0);
        if (cmcf->token_cache_ttl == (ngx_msec_t) NGX_ERROR
            || cmcf->token_cache_ttl == 0)
        {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "corelog: invalid token cache time \"%V\"",
                               &value[2]);
            return NGX_CONF_ERROR;
        }
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_corelog_auth_request(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_corelog_loc_conf_t  *clcf = conf;

    ngx_str_t  *value;

    if (clcf->auth_uri.len != NGX_CONF_UNSET_SIZE) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "off") == 0) {
        ngx_str_null(&clcf->auth_uri);
        return NGX_CONF_OK;
    }

    if (value[1].len == 0 || value[1].data[0] != '/') {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: \"%V\" takes a URI starting with \"/\" "
                           "or \"off\", not \"%V\"", &cmd->name, &value[1]);
        return NGX_CONF_ERROR;
    }

    clcf->auth_uri = value[1];
    ngx_http_corelog_conf_pos(cf, &clcf->auth_pos);

    return NGX_CONF_OK;
}


static void
ngx_http_corelog_conf_pos(ngx_conf_t *cf, ngx_http_corelog_conf_pos_t *pos)
{
    pos->file = cf->conf_file->file.name;
    pos->line = cf->conf_file->line;
}


/*
 * A content handler of ours: one per location.  Another module's handler
 * set before this one is caught here, one set after it when merging.
 */

static ngx_int_t
ngx_http_corelog_set_handler(ngx_conf_t *cf, ngx_http_corelog_loc_conf_t *clcf,
    ngx_http_handler_pt handler)
{
    ngx_http_core_loc_conf_t  *hlcf;

    hlcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);

    if (hlcf->handler != NULL || clcf->handler != NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: a location takes one of "
                           "\"corelog_api\", \"corelog_token_check\", "
                           "\"corelog_error\", \"corelog_status\" and no "
                           "other content handler");
        return NGX_ERROR;
    }

    hlcf->handler = handler;
    clcf->handler = handler;
    ngx_http_corelog_conf_pos(cf, &clcf->handler_pos);

    return NGX_OK;
}


static char *
ngx_http_corelog_token_check(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_corelog_loc_conf_t  *clcf = conf;

    ngx_str_t  *value;

    if (clcf->token_check != NGX_CONF_UNSET_UINT) {
        return "is duplicate";
    }

    value = cf->args->elts;

    if (ngx_strcmp(value[1].data, "bearer") == 0) {
        clcf->token_check = NGX_HTTP_CORELOG_TOKEN_BEARER;

    } else if (ngx_strcmp(value[1].data, "x-auth-token") == 0) {
        clcf->token_check = NGX_HTTP_CORELOG_TOKEN_X_AUTH;

    } else {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: invalid value \"%V\" in \"%V\", "
                           "expected \"bearer\" or \"x-auth-token\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_corelog_set_handler(cf, clcf,
                                     ngx_http_corelog_token_handler)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_corelog_api(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_corelog_loc_conf_t  *clcf = conf;

    ngx_str_t                         *value;
    ngx_uint_t                         i;
    ngx_http_complex_value_t          *cv;
    ngx_http_compile_complex_value_t   ccv;

    if (clcf->api != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    clcf->api = ngx_http_corelog_api_find(&value[1]);
    if (clcf->api == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: unknown API \"%V\" in \"%V\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts - 2 != clcf->api->nargs) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: \"%V %V\" takes %ui argument(s)",
                           &cmd->name, &value[1], clcf->api->nargs);
        return NGX_CONF_ERROR;
    }

    if (clcf->api->nargs) {
        clcf->api_args = ngx_array_create(cf->pool, clcf->api->nargs,
                                          sizeof(ngx_http_complex_value_t));
        if (clcf->api_args == NULL) {
            return NGX_CONF_ERROR;
        }

        for (i = 2; i < cf->args->nelts; i++) {
            cv = ngx_array_push(clcf->api_args);
            if (cv == NULL) {
                return NGX_CONF_ERROR;
            }

            ngx_memzero(&ccv, sizeof(ngx_http_compile_complex_value_t));

            ccv.cf = cf;
            ccv.value = &value[i];
            ccv.complex_value = cv;

            if (ngx_http_compile_complex_value(&ccv) != NGX_OK) {
                return NGX_CONF_ERROR;
            }
        }
    }

    if (ngx_http_corelog_set_handler(cf, clcf, ngx_http_corelog_handler)
        != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_corelog_error(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_corelog_loc_conf_t  *clcf = conf;

    ngx_str_t  *value;

    if (clcf->error_api != NULL) {
        return "is duplicate";
    }

    value = cf->args->elts;

    clcf->error_api = ngx_http_corelog_api_find(&value[1]);
    if (clcf->error_api == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "corelog: unknown API \"%V\" in \"%V\"",
                           &value[1], &cmd->name);
        return NGX_CONF_ERROR;
    }

    if (ngx_http_corelog_set_handler(cf, clcf,
                                     ngx_http_corelog_error_handler)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* corelog_status: the status zone's counters, JSON or Prometheus's text */

static char *
ngx_http_corelog_status(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_corelog_loc_conf_t  *clcf = conf;

    if (ngx_http_corelog_set_handler(cf, clcf,
                                     ngx_http_corelog_status_handler)
        != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* corelog_logtank_resource_types LISTENER ...: the accepted set */

static char *
ngx_http_corelog_resource_types(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf)
{
    ngx_http_corelog_loc_conf_t  *clcf = conf;

    ngx_str_t  *value, *type;
    ngx_uint_t  i;

    if (clcf->resource_types != NGX_CONF_UNSET_PTR) {
        return "is duplicate";
    }

    clcf->resource_types = ngx_array_create(cf->pool, cf->args->nelts - 1,
                                            sizeof(ngx_str_t));
    if (clcf->resource_types == NULL) {
        return NGX_CONF_ERROR;
    }

    value = cf->args->elts;

    for (i = 1; i < cf->args->nelts; i++) {

        if (ngx_http_corelog_identifier(&value[i], 64) != NGX_OK) {
            ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                               "corelog: invalid resource type \"%V\": "
                               "1 to 64 letters, digits, \"_\", \"-\", "
                               "\".\"", &value[i]);
            return NGX_CONF_ERROR;
        }

        type = ngx_array_push(clcf->resource_types);
        if (type == NULL) {
            return NGX_CONF_ERROR;
        }

        *type = value[i];
    }

    return NGX_CONF_OK;
}


/*
 * Which module runs, with what: a dynamic module has no line in nginx -V.
 * At notice level, like nginx's own "nginx/1.x.y" line: on start, reload
 * and nginx -t, in the error log of the configuration being loaded.
 */

static ngx_int_t
ngx_http_corelog_init_module(ngx_cycle_t *cycle)
{
    int  pq;

    pq = PQlibVersion();

    ngx_log_error(NGX_LOG_NOTICE, cycle->log, 0,
                  "corelog: version " NGX_HTTP_CORELOG_VERSION
                  " (nginx " NGINX_VERSION ", libpq %d.%d, jansson %s)",
                  pq / 10000, pq % 10000, jansson_version_str());

    return NGX_OK;
}


static ngx_int_t
ngx_http_corelog_init_process(ngx_cycle_t *cycle)
{
    ngx_http_corelog_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_corelog_module);

    if (cmcf == NULL || cmcf->conninfo.len == 0) {
        return NGX_OK;
    }

    /* not in the cache manager and loader: only workers serve requests */

    if (ngx_process != NGX_PROCESS_WORKER
        && ngx_process != NGX_PROCESS_SINGLE)
    {
        return NGX_OK;
    }

    cmcf->worker = ngx_pcalloc(cycle->pool, sizeof(ngx_http_corelog_worker_t));
    if (cmcf->worker == NULL) {
        return NGX_ERROR;
    }

    ngx_http_corelog_stats_init_process(cmcf);

    if (ngx_http_corelog_token_init_process(cycle, cmcf) != NGX_OK) {
        return NGX_ERROR;
    }

    return ngx_http_corelog_queue_init_process(cycle, cmcf);
}


static void
ngx_http_corelog_exit_process(ngx_cycle_t *cycle)
{
    ngx_http_corelog_main_conf_t  *cmcf;

    cmcf = ngx_http_cycle_get_module_main_conf(cycle, ngx_http_corelog_module);

    if (cmcf == NULL) {
        return;
    }

    ngx_http_corelog_apis_log_rows(cycle);
    ngx_http_corelog_queue_exit_process(cycle, cmcf);
    ngx_http_corelog_token_exit_process(cycle);
    ngx_http_corelog_stats_exit_process(cmcf->worker);

    cmcf->worker = NULL;
}
