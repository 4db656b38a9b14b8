"""The upload route: dataset files of any size, streamed from the browser to disk.

The Datasets page embeds `GET /uploads/` (an iframe on the API's port). Its script sends each
picked file as the body of one PUT, which `core.datasets.staging` writes to disk a chunk at a time,
so a multi-gigabyte zip never sits in the studio's memory. Writes need the `X-Studio-Upload`
header: a page on another site cannot send it without a CORS preflight, which this API never
grants, so it cannot plant files through the user's browser.
"""

from __future__ import annotations

from fastapi import APIRouter, Header, HTTPException, Query, Request
from fastapi.responses import HTMLResponse

from core.datasets import staging

UPLOADS_PATH = "/uploads"
HEADER = "X-Studio-Upload"

# A refusal from staging (a StudioError) is answered 400 with its sentence by the API's handler.
router = APIRouter(prefix=UPLOADS_PATH)


def _marked(value: str | None) -> None:
    if value != "1":
        raise HTTPException(403, f"Uploads must come from the studio's upload box (the {HEADER} header is missing).")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def upload_box() -> str:
    return PAGE


@router.post("/batches")
def new_batch(x_studio_upload: str | None = Header(None)) -> dict[str, str]:
    _marked(x_studio_upload)
    return {"id": staging.new_batch()}


@router.put("/batches/{batch_id}/files")
async def put_file(batch_id: str, request: Request, name: str = Query(min_length=1, max_length=1024), x_studio_upload: str | None = Header(None)) -> dict[str, int]:
    _marked(x_studio_upload)
    return {"bytes": await staging.receive_file(batch_id, name, request.stream())}


@router.post("/batches/{batch_id}/complete")
def complete(batch_id: str, x_studio_upload: str | None = Header(None)) -> staging.Batch:
    _marked(x_studio_upload)
    return staging.complete(batch_id)


# The upload box: pick files or a folder; each file goes up as one PUT with a progress bar.
PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Upload</title>
<style>
 body{font-family:system-ui,sans-serif;background:#0e1117;color:#fafafa;margin:0;padding:12px}
 label.pick{display:inline-block;padding:8px 14px;margin-right:8px;border:1px solid #7c5cff;border-radius:8px;cursor:pointer}
 label.pick:hover{background:#1f1b33} input[type=file]{display:none}
 progress{width:100%;height:14px;margin-top:12px;accent-color:#7c5cff}
 #status{margin-top:8px;font-size:14px;min-height:1.3em} .error{color:#ff6b6b}
</style></head><body>
<label class="pick">📄 Choose a zip or files<input id="files" type="file" multiple></label>
<label class="pick">📁 Choose a folder<input id="folder" type="file" webkitdirectory multiple></label>
<progress id="bar" value="0" max="1" hidden></progress>
<div id="status">Files go straight to the studio's disk, whatever their size.</div>
<script>
const status = document.getElementById("status"), bar = document.getElementById("bar");
const say = (text, error) => { status.textContent = text; status.className = error ? "error" : ""; };
const mb = (n) => (n / 1e6).toFixed(1) + " MB";
async function call(method, url, body) {
  const response = await fetch(url, {method, body, headers: {"X-Studio-Upload": "1"}, credentials: "same-origin"});
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(typeof data.detail === "string" ? data.detail : "The upload failed (" + response.status + ").");
  return data;
}
function put(url, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", url);
    xhr.setRequestHeader("X-Studio-Upload", "1");
    xhr.upload.onprogress = (e) => onProgress(e.loaded);
    xhr.onload = () => {
      let data = {}; try { data = JSON.parse(xhr.responseText); } catch (e) {}
      xhr.status < 300 ? resolve(data) : reject(new Error(typeof data.detail === "string" ? data.detail : "The upload failed (" + xhr.status + ")."));
    };
    xhr.onerror = () => reject(new Error("The connection to the studio was lost; upload the files again."));
    xhr.send(file);
  });
}
async function upload(files) {
  if (!files.length) return;
  const total = files.reduce((n, f) => n + f.size, 0);
  let done = 0;
  bar.hidden = false; bar.value = 0;
  try {
    const batch = await call("POST", "batches");
    for (const file of files) {
      const name = file.webkitRelativePath || file.name;
      say("Uploading " + name + "…");
      await put("batches/" + batch.id + "/files?name=" + encodeURIComponent(name), file, (loaded) => { bar.value = (done + loaded) / Math.max(total, 1); });
      done += file.size;
    }
    const result = await call("POST", "batches/" + batch.id + "/complete");
    bar.value = 1;
    say("✅ Uploaded " + result.files + " file(s), " + mb(result.bytes) + ". Name the dataset and import it in the studio.");
  } catch (error) {
    say(error.message, true);
  }
}
for (const id of ["files", "folder"]) {
  const input = document.getElementById(id);
  // A copy: clearing the input (so the same files can be picked again) empties its FileList.
  input.addEventListener("change", () => { const files = Array.from(input.files); input.value = ""; upload(files); });
}
</script></body></html>
"""
