"""Synthetic CVs in the dotin XML format, written by the tests themselves (no real resume text)."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path
from xml.sax.saxutils import escape

FIRST = ["Alba", "Bruno", "Chidi", "Dana", "Emil", "Farah", "Goran", "Hana", "Ivo", "Juno", "Kemal", "Lia"]
LAST = ["Quist", "Rendal", "Sorrel", "Tamsin", "Ulver", "Vance", "Wexley", "Yarrow", "Zeller", "Orme"]
CITIES = ["Springfield, IL", "Riverton, WY", "Lakeside, CA", "Hillview, TX", "Bayport, ME"]
TITLES = ["Software Engineer", "Data Analyst", "Project Manager", "Web Developer", "QA Tester"]
COMPANIES = ["Acme Corp", "Globex Inc", "Initech", "Umbrella Labs", "Hooli"]
COLLEGES = ["State University", "Lakeside College", "Institute of Technology"]
DEGREES = ["B.Sc. Computer Science", "Master of Science", "Bachelor of Arts"]
TOOLS = ["Python", "Java", "SQL", "Excel", "Docker", "Linux", "JavaScript"]
SKILLS = ["data analysis", "software testing", "project planning", "web design"]
SOFT = ["teamwork", "communication", "leadership"]


def label(kind: str, text: str) -> str:
    return f'<label type="{kind}">{escape(text)}</label>'


def synthetic_cv(rng: random.Random) -> str:
    """One CV body (between <cv> tags) with labelled spans, shaped like the dotin export."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    years = rng.randint(2, 12)
    grad = rng.randint(1998, 2018)
    parts = [
        f'\n"{label("Name", f"{first} {last}")}  {label("Location", rng.choice(CITIES))}  ',
        f"Phone: (555) 123-{rng.randint(1000, 9999)}  ",
        f"{label('Email Address', f'{first.lower()}.{last.lower()}@example.com')}  ",
        f"SUMMARY  {label('Designation', rng.choice(TITLES))} with {label('Years of Experience', f'{years} years')} ",
        f"of experience in {label('Job Specific Skills', rng.choice(SKILLS))} and ",
        f"{label('Soft Skills', rng.choice(SOFT))}.  ",
        "EXPERIENCE  ",
        f"{label('Designation', rng.choice(TITLES))}  {label('Companies worked at', rng.choice(COMPANIES))} - ",
        f"{label('Location', rng.choice(CITIES))}  Used {label('Tech Tools', rng.choice(TOOLS))} and ",
        f"{label('Tech Tools', rng.choice(TOOLS))} daily \\xe2\\x80\\xa2 shipped releases.  ",
        f"EDUCATION  {label('Degree', rng.choice(DEGREES))}  {label('College Name', rng.choice(COLLEGES))}  ",
        f"{label('Graduation Year', str(grad))}  SKILLS  {label('Tech Tools', rng.choice(TOOLS))}, ",
        f'{label("Tech Tools", rng.choice(TOOLS))}"\n',
    ]
    return "".join(parts)


def cv_xml(body: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<cv>{body}</cv>\n'.encode()


def write_zip(path: Path, files: dict[str, bytes], folder: str = "cvs") -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(f"{folder}/{name}", data)
    return path


def synthetic_zip(path: Path, count: int, seed: int, folder: str = "cvs") -> Path:
    rng = random.Random(seed)
    return write_zip(path, {f"{i}.xml": cv_xml(synthetic_cv(rng)) for i in range(count)}, folder)
