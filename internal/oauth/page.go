package oauth

import (
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"html/template"
	"net/http"
	"net/url"
	"strings"
)

// pageStyle is the page's only styling, inline and allowed by its hash in
// the Content-Security-Policy; the page loads nothing else.
const pageStyle = `body{font:16px/1.5 system-ui,sans-serif;max-width:34rem;margin:2rem auto;padding:0 1rem;color:#1d2430}
h1{font-size:1.4rem}.client{display:flex;gap:1rem;align-items:center}.client img{width:48px;height:48px;border-radius:8px}
.id{font-family:monospace;font-size:.85rem;word-break:break-all;color:#555}.warn{color:#8a4b00}
.err{background:#fde8e8;border:1px solid #e0a0a0;padding:.5rem .75rem;border-radius:6px}
ul{padding-left:1.2rem}label{display:block;margin-top:.75rem;font-weight:600}
input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.5rem;font-size:1rem}
.buttons{display:flex;gap:.75rem;margin-top:1.25rem}button{font-size:1rem;padding:.55rem 1.2rem;border-radius:6px;border:1px solid #888;cursor:pointer}
button.approve{background:#1558d6;color:#fff;border-color:#1558d6}`

var styleHash = func() string {
	h := sha256.Sum256([]byte(pageStyle))
	return "'sha256-" + base64.StdEncoding.EncodeToString(h[:]) + "'"
}()

var consentPage = template.Must(template.New("consent").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Authorize {{.ClientName}}</title><style>{{.Style}}</style></head>
<body><main>
<div class="client">{{if .LogoURI}}<img src="{{.LogoURI}}" alt="">{{end}}
<div><h1>Authorize {{.ClientName}}</h1><div class="id">{{.ClientID}}</div></div></div>
<p>This app asks to use your account on <strong>{{.Host}}</strong>. {{if .Unverified}}<span class="warn">The app names itself; this server has not verified the name or logo — check the address above.</span>{{end}}</p>
<p>If you approve, it will be able to:</p>
<ul id="permissions">{{range .Permissions}}<li>{{.}}</li>{{end}}</ul>
{{if .Error}}<p class="err" role="alert" id="error">{{.Error}}</p>{{end}}
<form method="post" action="/oauth/authorize">
<input type="hidden" name="request_uri" value="{{.RequestURI}}">
<input type="hidden" name="client_id" value="{{.ClientID}}">
<input type="hidden" name="csrf" value="{{.CSRF}}">
<label for="identifier">Handle</label>
<input type="text" id="identifier" name="identifier" value="{{.Identifier}}" autocomplete="username" autocapitalize="none" spellcheck="false">
<label for="password">Account password</label>
<input type="password" id="password" name="password" autocomplete="current-password">
<p class="id">Use your account password; app passwords are not accepted here.</p>
<div class="buttons"><button class="approve" type="submit" name="action" value="approve">Sign in and approve</button>
<button type="submit" name="action" value="deny" formnovalidate>Deny</button></div>
</form></main></body></html>
`))

var errorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>Authorization failed</title><style>{{.Style}}</style></head>
<body><main><h1>Authorization failed</h1><p class="err" id="error">{{.Message}}</p></main></body></html>
`))

// securityHeaders are sent with every page: nothing loads but the inline
// style (by hash) and, when shown, the client's logo from its own https
// origin; no framing, no referrer, no caching.
func securityHeaders(w http.ResponseWriter, logoOrigin, formTarget string) {
	img := "'none'"
	if logoOrigin != "" {
		img = logoOrigin
	}
	form := "'self'"
	if formTarget != "" {
		form += " " + formTarget
	}
	h := w.Header()
	// The page's answers must not be readable from other origins.
	h.Del("Access-Control-Allow-Origin")
	h.Set("Content-Security-Policy", "default-src 'none'; style-src "+styleHash+"; img-src "+img+
		"; form-action "+form+"; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Type", "text/html; charset=utf-8")
}

// originOf returns the CSP source for a URL: its origin for http(s), its
// scheme for a custom scheme.
func originOf(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return ""
	}
	if u.Scheme == "http" || u.Scheme == "https" {
		return u.Scheme + "://" + u.Host
	}
	return u.Scheme + ":"
}

func (p *Provider) renderConsent(w http.ResponseWriter, r *http.Request, req *Request, c *Client, identifier, msg string, status int) {
	cookie := p.ensureCSRFCookie(w, r)
	sc, err := parseStored(req.Scope)
	if err != nil {
		p.renderError(w, err)
		return
	}
	name := c.Name
	if name == "" {
		name = c.ID
	}
	logoOrigin := ""
	if c.LogoURI != "" {
		logoOrigin = originOf(c.LogoURI)
	}
	host := strings.TrimPrefix(strings.TrimPrefix(p.issuer, "https://"), "http://")
	securityHeaders(w, logoOrigin, originOf(req.RedirectURI))
	w.WriteHeader(status)
	consentPage.Execute(w, map[string]any{
		"Style":       template.CSS(pageStyle),
		"ClientName":  name,
		"ClientID":    c.ID,
		"LogoURI":     c.LogoURI,
		"Unverified":  true,
		"Host":        host,
		"Permissions": sc.Describe(),
		"Error":       msg,
		"RequestURI":  requestURIPrefix + req.ID,
		"CSRF":        p.csrfToken(cookie, req.ID),
		"Identifier":  identifier,
	})
}

func (p *Provider) renderError(w http.ResponseWriter, err error) {
	var pe *pageError
	if !errors.As(err, &pe) {
		p.log.Error("authorization page failed", "err", err)
		pe = &pageError{http.StatusInternalServerError, "Something went wrong on the server. Try again later."}
	}
	securityHeaders(w, "", "")
	w.WriteHeader(pe.status)
	errorPage.Execute(w, map[string]any{"Style": template.CSS(pageStyle), "Message": pe.msg})
}
