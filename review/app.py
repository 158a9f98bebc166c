"""The reviewers' web application: sign-in, the queue, the asset page, decisions, media, audit log.

`create_app` builds it from a database, the review settings and the decision actions, so tests
and `avatarflow review serve` assemble the same application.
"""

# No `from __future__ import annotations` here: FastAPI reads the route signatures at run time,
# and the routes use aliases (Signed) defined inside create_app.
import asyncio
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import (
    APIRouter,
    BackgroundTasks,
    Depends,
    FastAPI,
    Form,
    HTTPException,
    Query,
    Request,
)
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from avatarflow.errors import ClaimConflict, IllegalTransition
from db.models import Reviewer
from db.session import Database
from review import pages, sessions
from review.actions import DecisionActions, NoActions, run_actions
from review.auth import SignIn, SignInResult, client_address, sign_in
from review.claims import active_claims, claim, release
from review.config import REJECT_REASONS, ReviewSettings, session_secret
from review.decisions import DecisionRefused, decide, make_decision
from review.media import content_type, frame_ms, may_see, media_file, video_duration, video_frame
from review.queue import WHY_LABELS, load_queue, next_for
from review.security import (
    ErrorPage,
    NotSignedIn,
    SecurityHeaders,
    csrf_token,
    require_csrf,
    safe_next,
)

HERE = Path(__file__).parent
SESSION_COOKIE = "avatarflow_review"
MAX_SKIPPED = 200


# An asset id in a path: a 64-bit integer, else "not found" (never a database error).
AssetId = Annotated[int, PathParam(ge=1, le=pages.MAX_ID)]


def create_app(database: Database, settings: ReviewSettings,
               actions: DecisionActions | None = None) -> FastAPI:
    actions = actions or NoActions()
    templates = Jinja2Templates(directory=HERE / "templates")
    pages.register_filters(templates.env)

    # No interactive docs or OpenAPI schema: they would be unauthenticated routes.
    app = FastAPI(title="avatarflow review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(ErrorPage)  # innermost: a crash becomes a 500 that still gets the headers below
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret(settings),
        session_cookie=SESSION_COOKIE,
        max_age=int(settings.review_session_hours * 3600),
        same_site=settings.review_same_site,  # type: ignore[arg-type]
        https_only=settings.review_secure_cookies,
    )
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    # ---- helpers -------------------------------------------------------------------------------

    def current_reviewer(request: Request) -> Reviewer:
        # The cookie holds a token only; the server-side session says whether it still counts.
        with database.session() as session:
            reviewer = sessions.reviewer_of(session, settings, request.session.get("sid"))
            if reviewer is not None:
                session.expunge(reviewer)
        if reviewer is None:
            request.session.clear()  # signed out, ended elsewhere, expired, disabled, new password
            raise NotSignedIn()
        request.state.reviewer = reviewer  # error pages show the signed-in header too
        return reviewer

    def require_admin(reviewer: Annotated[Reviewer, Depends(current_reviewer)]) -> Reviewer:
        if reviewer.role != "admin":
            raise HTTPException(status_code=403, detail="the audit log is for admins only")
        return reviewer

    def flash(request: Request, message: str) -> None:
        request.session["flash"] = [*request.session.get("flash", [])[-4:], message]

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200,
               reviewer: Reviewer | None = None, headers: dict[str, str] | None = None) -> HTMLResponse:
        base = {
            "reviewer": reviewer or getattr(request.state, "reviewer", None),
            "csrf": csrf_token(request),
            "flashes": request.session.pop("flash", []),
            "prefect_ui_url": settings.prefect_ui_url,
        }
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status,
                                          headers=headers)

    def filters_query(batch: str | None, why: str | None) -> str:
        params = {k: v for k, v in (("batch", batch), ("why", why)) if v}
        return ("?" + urlencode(params)) if params else ""

    def redirect(url: str) -> RedirectResponse:
        return RedirectResponse(url, status_code=303)

    # ---- errors --------------------------------------------------------------------------------

    @app.exception_handler(NotSignedIn)
    async def _not_signed_in(request: Request, exc: NotSignedIn) -> Response:
        # Pages send people to the sign-in form; media and form posts just get 401.
        if request.method in ("GET", "HEAD") and not request.url.path.startswith("/media/"):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return redirect("/sign-in?" + urlencode({"next": safe_next(target)}))
        return PlainTextResponse("sign in first", status_code=401)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if request.url.path.startswith("/media/") or exc.status_code == 405:
            return PlainTextResponse(str(exc.detail), status_code=exc.status_code, headers=exc.headers)
        titles = {403: "Not allowed", 404: "Not found"}
        return render(request, "message.html", {"title": titles.get(exc.status_code, "Error"),
                                                 "message": exc.detail}, status=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        # A malformed id or kind in the path names nothing: that is "not found", not a form error.
        if any(err.get("loc", ("",))[0] == "path" for err in exc.errors()):
            return PlainTextResponse("not found", status_code=404)
        return PlainTextResponse("invalid request", status_code=422)

    # ---- sign-in (the only routes without a session) -------------------------------------------

    public = APIRouter(dependencies=[Depends(require_csrf)])

    @public.get("/sign-in", response_class=HTMLResponse)
    def sign_in_form(request: Request, next: str | None = None) -> Response:
        return render(request, "sign_in.html", {"next": safe_next(next)})

    @public.post("/sign-in", response_class=HTMLResponse)
    async def sign_in_post(request: Request, username: Annotated[str, Form(max_length=200)],
                           password: Annotated[str, Form(max_length=1024)],
                           next: Annotated[str, Form(max_length=2000)] = "/queue") -> Response:
        ip = client_address(request.client.host if request.client else None,
                            request.headers.get("x-forwarded-for"), settings.review_trusted_proxies)

        def check() -> tuple[SignInResult, str | None]:
            with database.session() as session:
                result = sign_in(session, settings, username, password, ip)
                token = sessions.open_session(session, result.reviewer, ip) if result.outcome is SignIn.OK else None
            return result, token

        result, token = await run_in_threadpool(check)  # Argon2 and the database off the event loop
        if result.delay_s:
            await asyncio.sleep(result.delay_s)  # slows a guesser without holding a worker thread
        target = safe_next(next)
        if result.outcome is SignIn.RATE_LIMITED:
            return render(request, "sign_in.html",
                          {"next": target, "username": username,
                           "error": "Too many failed sign-ins. Wait a few minutes and try again."},
                          status=429, headers={"Retry-After": str(settings.review_login_window_seconds)})
        if result.outcome is SignIn.BAD_CREDENTIALS:
            return render(request, "sign_in.html", {"next": target, "username": username,
                                                    "error": "Wrong username or password."}, status=401)
        assert result.reviewer is not None
        # A fresh session (and CSRF token) at sign-in: nothing from before carries over.
        request.session.clear()
        request.session["sid"] = token
        csrf_token(request)
        return redirect(target)

    # ---- everything else needs a signed-in reviewer --------------------------------------------

    router = APIRouter(dependencies=[Depends(current_reviewer), Depends(require_csrf)])
    Signed = Annotated[Reviewer, Depends(current_reviewer)]

    @router.get("/")
    def home() -> Response:
        return redirect("/queue")

    @router.post("/sign-out")
    def sign_out(request: Request, reviewer: Signed) -> Response:
        with database.session() as session:
            for claimed in pages.claims_of(session, reviewer.id):
                release(session, claimed, reviewer)
            sessions.end_session(session, request.session.get("sid"))  # copies of the cookie die too
        request.session.clear()
        return redirect("/sign-in")

    @router.get("/queue", response_class=HTMLResponse)
    def queue_page(request: Request, reviewer: Signed, batch: str | None = None,
                   why: str | None = None) -> Response:
        batch, why = batch or None, why if why in WHY_LABELS else None
        with database.session() as session:
            batch = pages.batch_name(session, batch)
            queue = load_queue(session, batch=batch, why=why, margin=settings.qc_margin)
            context = pages.queue_context(session, queue, settings)
        return render(request, "queue.html", {**context, "batch": batch, "why": why,
                                              "why_labels": WHY_LABELS,
                                              "filters": filters_query(batch, why)}, reviewer=reviewer)

    def next_target(request: Request, session: Any, reviewer: Reviewer, batch: str | None,
                    why: str | None, claim_it: bool) -> str:
        """Where "next" leads: the next asset for this reviewer (claimed when `claim_it`), or the queue."""
        skipped = frozenset(request.session.get("skip", []))
        for _ in range(5):  # a colleague may claim the one we picked between the pick and our claim
            asset_id = next_for(session, reviewer.id, batch=batch, why=why, skip=skipped, margin=settings.qc_margin)
            if asset_id is None and skipped:
                request.session["skip"] = []
                if next_for(session, reviewer.id, batch=batch, why=why, margin=settings.qc_margin) is not None:
                    flash(request, "Only assets you skipped are left; open one from the queue.")
                    return "/queue" + filters_query(batch, why)
            if asset_id is None:
                break
            asset = pages.load_asset(session, asset_id)
            if not claim_it or (asset is not None and claim(session, asset, reviewer,
                                                            settings.review_claim_minutes).held):
                return f"/assets/{asset_id}" + filters_query(batch, why)
        flash(request, "Nothing is waiting for review" + (" with these filters." if batch or why else "."))
        return "/queue" + filters_query(batch, why)

    @router.get("/next")
    def next_asset(request: Request, reviewer: Signed, batch: str | None = None,
                   why: str | None = None) -> Response:
        """Shows the next asset without claiming it (a GET changes nothing)."""
        batch, why = batch or None, why if why in WHY_LABELS else None
        with database.session() as session:
            return redirect(next_target(request, session, reviewer, batch, why, claim_it=False))

    @router.post("/next")
    def claim_next(request: Request, reviewer: Signed, batch: Annotated[str, Form(max_length=200)] = "",
                   why: Annotated[str, Form(max_length=50)] = "") -> Response:
        """Claims the next asset and opens it ("Start reviewing", and after each decision)."""
        batch_or_none, why_or_none = batch or None, why if why in WHY_LABELS else None
        with database.session() as session:
            return redirect(next_target(request, session, reviewer, batch_or_none, why_or_none, claim_it=True))

    @router.post("/assets/{asset_id:int}/claim")
    def claim_asset(request: Request, asset_id: AssetId, reviewer: Signed,
                    batch: Annotated[str, Form(max_length=200)] = "",
                    why: Annotated[str, Form(max_length=50)] = "") -> Response:
        with database.session() as session:
            asset = pages.load_asset(session, asset_id)
            if asset is None:
                raise HTTPException(status_code=404, detail=f"there is no asset {asset_id}")
            held = claim(session, asset, reviewer, settings.review_claim_minutes)
        if not held.held and held.holder:
            until = held.expires_at.strftime("%H:%M UTC") if held.expires_at else "?"
            flash(request, f"Asset {asset_id} is being reviewed by {held.holder} (claimed until {until}).")
        return redirect(f"/assets/{asset_id}" + filters_query(batch or None, why or None))

    @router.get("/assets/{asset_id:int}", response_class=HTMLResponse)
    def asset_page(request: Request, asset_id: AssetId, reviewer: Signed, batch: str | None = None,
                   why: str | None = None) -> Response:
        batch, why = batch or None, why if why in WHY_LABELS else None
        with database.session() as session:
            asset = pages.load_asset(session, asset_id)
            if asset is None:
                raise HTTPException(status_code=404, detail=f"there is no asset {asset_id}")
            # Viewing claims nothing (a GET changes no state): the claim is a POST, see claim_asset.
            current = active_claims(session).get(asset.id)
            mine = current if current is not None and current.reviewer_id == reviewer.id else None
            other = current if current is not None and mine is None else None
            context = pages.asset_context(session, asset, settings)
            context["held_by"] = (other.reviewer.username, other.expires_at) if other is not None else None
        return render(request, "asset.html", {
            **context, "claim": mine, "batch": batch, "why": why,
            "filters": filters_query(batch, why), "reject_reasons": REJECT_REASONS,
        }, reviewer=reviewer)

    @router.post("/assets/{asset_id:int}/decision")
    def decision_post(request: Request, asset_id: AssetId, reviewer: Signed, background: BackgroundTasks,
                      decision: Annotated[str, Form(max_length=20)],
                      reason_code: Annotated[str, Form(max_length=50)] = "",
                      notes: Annotated[str, Form(max_length=8000)] = "",
                      time_ranges: Annotated[str, Form(max_length=2000)] = "",
                      batch: Annotated[str, Form(max_length=200)] = "",
                      why: Annotated[str, Form(max_length=50)] = "") -> Response:
        with database.session() as session:
            video = media_file(session, settings.data_root, asset_id, "web")
        duration = video_duration(video) if video is not None else None
        try:
            chosen = make_decision(decision, reason_code or None, notes, time_ranges, duration)
            with database.session() as session:
                outcome = decide(session, settings, asset_id, reviewer, chosen)
        except (DecisionRefused, ClaimConflict, IllegalTransition) as exc:
            status = exc.status if isinstance(exc, DecisionRefused) else 409
            return render(request, "message.html", {
                "title": "Decision not recorded", "message": str(exc),
                "links": [(f"/assets/{asset_id}{filters_query(batch, why)}", "Back to the asset"),
                          ("/next" + filters_query(batch, why), "Next in the queue")],
            }, status=status, reviewer=reviewer)
        approved = outcome.to_state == "approved"
        background.add_task(run_actions, actions, [asset_id] if approved else [],
                            None if approved else asset_id, outcome.regenerate)
        if approved:
            flash(request, f"Asset {asset_id} approved: on its way to delivery.")
        elif outcome.regenerate:
            flash(request, f"Asset {asset_id} rejected ({chosen.reason_code}): sent back for regeneration.")
        else:
            flash(request, f"Asset {asset_id} rejected ({chosen.reason_code}).")
        return RedirectResponse("/next", status_code=307)  # POST again: the next asset is claimed

    @router.post("/assets/{asset_id:int}/skip")
    def skip(request: Request, asset_id: AssetId, reviewer: Signed,
             batch: Annotated[str, Form(max_length=200)] = "",
             why: Annotated[str, Form(max_length=50)] = "") -> Response:
        with database.session() as session:
            release(session, asset_id, reviewer)
        request.session["skip"] = [*request.session.get("skip", [])[-MAX_SKIPPED:], asset_id]
        return RedirectResponse("/next", status_code=307)  # POST again: the next asset is claimed

    # Before /media/{asset_id}/{kind}: routes match in order, and "frame" would be taken for a kind.
    @router.api_route("/media/{asset_id:int}/frame", methods=["GET", "HEAD"])
    def media_frame(asset_id: AssetId, reviewer: Signed, t: Annotated[str, Query(max_length=32)] = "") -> Response:
        """One frame of the video the player plays, as a JPEG thumbnail (cut once, then cached)."""
        ms = frame_ms(t)
        with database.session() as session:
            video = media_file(session, settings.data_root, asset_id, "web") \
                if ms is not None and may_see(session, asset_id, reviewer) else None
        # ffmpeg runs outside the database session: a slow cut holds no connection.
        path = video_frame(video, settings.data_root, asset_id, ms) if video is not None and ms is not None else None
        if path is None:
            raise HTTPException(status_code=404, detail="not found")
        return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, no-store"})

    @router.api_route("/media/{asset_id:int}/{kind}", methods=["GET", "HEAD"])
    def media(asset_id: AssetId, kind: str, reviewer: Signed) -> Response:
        with database.session() as session:
            path = media_file(session, settings.data_root, asset_id, kind) \
                if may_see(session, asset_id, reviewer) else None
        if path is None:
            raise HTTPException(status_code=404, detail="not found")
        # Starlette's FileResponse answers Range requests itself: 206 with Content-Range for one
        # range, multipart/byteranges for several, 416 for unsatisfiable ones. Never stored: a
        # signed-out browser must not keep serving the video from its cache.
        return FileResponse(path, media_type=content_type(path), headers={"Cache-Control": "private, no-store"})

    @router.get("/audit", response_class=HTMLResponse)
    def audit(request: Request, admin: Annotated[Reviewer, Depends(require_admin)],
              asset: str = "", actor: str = "", state: str = "", reason: str = "",
              before: str = "") -> Response:
        with database.session() as session:
            context = pages.audit_context(session, asset=asset, actor=actor, state=state,
                                          reason=reason, before=before)
        return render(request, "audit.html", context, reviewer=admin)

    app.include_router(public)
    app.include_router(router)
    return app

