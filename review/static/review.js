// Keyboard shortcuts and small conveniences for the review pages. Loaded as a file (the CSP
// forbids inline scripts); every page works without it.
(function () {
  "use strict";

  function typing(target) {
    return target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName));
  }

  function fmt(seconds) {
    return (Math.round(seconds * 100) / 100).toString();
  }

  // Queue: changing the batch filter applies it.
  document.querySelectorAll("select.autosubmit").forEach(function (select) {
    select.addEventListener("change", function () { select.form.submit(); });
  });

  var player = document.getElementById("player");
  var form = document.getElementById("decide-form");
  var reason = document.getElementById("reason");
  var ranges = document.getElementById("time-ranges");
  var rejectHint = document.getElementById("reject-hint");
  var markStart = null;

  function submitWith(button) {
    if (!button || button.disabled) return;
    if (form.requestSubmit) form.requestSubmit(button); else button.click();
  }

  // A rejection needs a reason; say so instead of sending a form the server will refuse.
  if (form) {
    form.addEventListener("submit", function (event) {
      var decision = event.submitter ? event.submitter.value : "";
      if (decision === "reject" && !reason.value) {
        event.preventDefault();
        rejectHint.hidden = false;
        reason.focus();
        return;
      }
      // One decision per page: a double click or a repeated key must not post twice.
      if (form.dataset.sent) { event.preventDefault(); return; }
      form.dataset.sent = "1";
    });
  }

  function markRange() {
    if (!player || !ranges) return;
    var t = player.currentTime;
    var button = document.getElementById("mark-range");
    if (markStart === null) {
      markStart = t;
      button.textContent = "End at " + fmt(t) + " s";
    } else {
      var start = Math.min(markStart, t), end = Math.max(markStart, t);
      if (end - start < 0.05) end = start + 0.5;
      var text = fmt(start) + "-" + fmt(end);
      ranges.value = ranges.value.trim() ? ranges.value.trim() + ", " + text : text;
      markStart = null;
      button.innerHTML = "Mark <kbd>M</kbd>";
    }
  }
  var markButton = document.getElementById("mark-range");
  if (markButton) markButton.addEventListener("click", markRange);

  // The sync chart: click to seek, and a playhead that follows the video.
  var chart = document.getElementById("sync-chart");
  if (chart && player) {
    var duration = parseFloat(chart.dataset.duration);
    var left = parseFloat(chart.dataset.left);
    var width = parseFloat(chart.dataset.plotWidth);
    var playhead = document.getElementById("playhead");
    var viewWidth = chart.viewBox.baseVal.width;
    chart.addEventListener("click", function (event) {
      var box = chart.getBoundingClientRect();
      var x = (event.clientX - box.left) * viewWidth / box.width;
      var t = Math.max(0, Math.min(duration, (x - left) / width * duration));
      player.currentTime = t;
    });
    player.addEventListener("timeupdate", function () {
      var x = left + width * Math.min(1, player.currentTime / duration);
      playhead.setAttribute("x1", x.toFixed(1));
      playhead.setAttribute("x2", x.toFixed(1));
    });
  }

  // QC ranges, the timeline's segments and the worst frames seek the player. Without a script
  // the links open the video at that time (a media fragment) and the ranges stay readable.
  function seek(t) {
    if (!player || !isFinite(t)) return;
    player.currentTime = Math.max(0, t);
    player.scrollIntoView({ block: "nearest" });
  }
  document.querySelectorAll("a[data-seek]").forEach(function (link) {
    link.addEventListener("click", function (event) {
      if (!player) return;
      event.preventDefault();
      seek(parseFloat(link.dataset.seek));
    });
  });

  // The QC timeline: a segment seeks to its start, anywhere else to that point of the video.
  var timeline = document.getElementById("qc-timeline");
  if (timeline && player) {
    var span = parseFloat(timeline.dataset.duration);
    var tlLeft = parseFloat(timeline.dataset.left);
    var tlWidth = parseFloat(timeline.dataset.plotWidth);
    var tlView = timeline.viewBox.baseVal.width;
    var tlHead = document.getElementById("qc-playhead");
    timeline.addEventListener("click", function (event) {
      var segment = event.target.closest("[data-seek]");
      if (segment) { seek(parseFloat(segment.getAttribute("data-seek"))); return; }
      var box = timeline.getBoundingClientRect();
      var x = (event.clientX - box.left) * tlView / box.width;
      if (x >= tlLeft) seek(Math.min(span, (x - tlLeft) / tlWidth * span));
    });
    player.addEventListener("timeupdate", function () {
      var x = tlLeft + tlWidth * Math.min(1, player.currentTime / span);
      tlHead.setAttribute("x1", x.toFixed(1));
      tlHead.setAttribute("x2", x.toFixed(1));
    });
  }

  // "Use QC ranges" fills the time-range field with the stretches QC flags.
  var useQc = document.getElementById("use-qc-ranges");
  if (useQc && ranges) {
    useQc.addEventListener("click", function () {
      ranges.value = useQc.dataset.ranges;
    });
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape" && typing(event.target)) { event.target.blur(); return; }
    if (typing(event.target)) return;
    var key = event.key.toLowerCase();
    if (form && key === "a") { event.preventDefault(); submitWith(document.getElementById("approve")); }
    else if (form && key === "r") {
      event.preventDefault();
      if (reason.value) submitWith(document.getElementById("reject"));
      else { rejectHint.hidden = false; reason.focus(); }
    }
    else if (key === "n" && document.getElementById("skip-form")) {
      event.preventDefault(); document.getElementById("skip-form").submit();
    }
    else if (form && /^[1-9]$/.test(key) && reason.options[parseInt(key, 10)]) {
      reason.selectedIndex = parseInt(key, 10);
    }
    else if (player && (key === "k" || key === " ")) {
      event.preventDefault(); if (player.paused) player.play(); else player.pause();
    }
    else if (player && key === "j") { player.currentTime = Math.max(0, player.currentTime - 2); }
    else if (player && key === "l") { player.currentTime = Math.min(player.duration || 0, player.currentTime + 2); }
    else if (player && key === "m") { markRange(); }
  });
})();
